"""One etcd lease shared by many writes, replaced once when etcd says it is gone.

Granting a lease per key doubles what etcd has to write; keys that only need to vanish "about" a
TTL later (the tick history, raw gateway entries) share one lease for ``reuse_for`` seconds instead.
Every key written on it lives between ``ttl - reuse_for`` and ``ttl`` seconds.

A shared lease can disappear before its time: etcd restored from a backup, a lease revoked by hand.
Every write on it then fails with ``LeaseNotFound``; the first writer to see that replaces it, and
the writers that failed on the same stale lease meanwhile get that replacement instead of each
granting one more (``replace`` renews only while the stale id is still the current one).

Usage, for any writer (``with_lease`` does the get / write / replace-once / write-again dance)::

    lease = SharedLease(etcd, ttl=7 * 86400, reuse_for=3600)
    await lease.with_lease(lambda lease_id: etcd.put(key, value, lease=lease_id))

Used by the tick history (``schedules.py``) and the gateway's raw entries (``gateway/raw.py``).

Or by hand::

    lease_id = await lease.get()
    try:
        await etcd.put(key, value, lease=lease_id)
    except LeaseNotFound:
        await etcd.put(key, value, lease=await lease.replace(lease_id))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .etcd import Etcd
from .failover import LeaseNotFound

T = TypeVar("T")


class SharedLease:
    def __init__(
        self, etcd: Etcd, ttl: int, reuse_for: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.etcd = etcd
        self.ttl = ttl
        self.reuse_for = reuse_for
        self._clock = clock
        self._current: tuple[int, float] | None = None  # (lease id, clock when it was asked for)
        self._lock = asyncio.Lock()  # one grant at a time: concurrent writers share its result

    async def get(self) -> int:
        """The current lease, or a new one when there is none or it was shared ``reuse_for`` s."""
        async with self._lock:
            if self._current is not None and self._clock() - self._current[1] < self.reuse_for:
                return self._current[0]
            return await self._grant()

    async def replace(self, stale_id: int) -> int:
        """A lease instead of ``stale_id``, which etcd no longer knows: a new one if ``stale_id`` is
        still the current lease, else the one another writer already replaced it with."""
        async with self._lock:
            if self._current is not None and self._current[0] != stale_id:
                return self._current[0]
            return await self._grant()

    async def with_lease(self, write: Callable[[int], Awaitable[T]]) -> T:
        """``write(lease_id)``, once more on a replacement lease if the lease was gone."""
        lease_id = await self.get()
        try:
            return await write(lease_id)
        except LeaseNotFound:
            return await write(await self.replace(lease_id))

    async def _grant(self) -> int:
        asked_at = self._clock()  # before the grant: the lease lives at least ``ttl`` from here
        lease_id = await self.etcd.grant_lease(self.ttl)
        self._current = (lease_id, asked_at)
        return lease_id
