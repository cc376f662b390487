"""Federation-wide, lease-bound locks (one per dataset's ``ground-truth``).

The lock key is created only if absent and is bound to a lease the holder keeps alive. A holder that
crashes stops refreshing, so etcd deletes the key when the lease runs out: nobody waits longer than
the TTL for a dead holder. The lock is not a fence on its own; the git push that follows is
non-forcing, so a holder that lost its lease still cannot overwrite another's merge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import EtcdUnavailable, Unavailable
from ..retry import Backoff
from . import keys, records
from .etcd import Etcd
from .records import LockHolder

log = logging.getLogger(__name__)


# How long before the lease's end a lock whose refreshes fail counts as lost.
LOST_MARGIN = 1.0
# The longest lease a lock can have (MAO_LOCK_TTL's upper bound): a key on a longer one, or on none,
# is not a lock any instance took, and is removed rather than waited for.
MAX_LOCK_TTL = 3600


class LockTimeout(Unavailable):
    code = "lock_timeout"


class LockLost(Unavailable):
    code = "lock_lost"


@dataclass
class HeldLock:
    key: str
    lease: int
    holder: dict[str, Any]
    lost: bool = False
    # Set together with ``lost``; worker threads (a git push) wait on it to stop what they do.
    lost_event: threading.Event = field(default_factory=threading.Event)

    def mark_lost(self) -> None:
        self.lost = True
        self.lost_event.set()

    def check(self) -> None:
        """Raise if the lease could not be kept alive; call before acting under the lock."""
        if self.lost:
            raise LockLost(f"lost the lease of lock {self.key} (etcd did not refresh it in time)")


def _ignore(_seconds: float) -> None:
    pass


class Locks:
    def __init__(self, etcd: Etcd, instance: str, ttl: int = 15, wait: float = 600.0) -> None:
        self.etcd = etcd
        self.instance = instance
        self.ttl = ttl
        self.wait = wait
        # Told how long each dataset lock took to get (the node points it at its metrics).
        self.on_dataset_wait: Callable[[float], None] = _ignore

    @contextlib.asynccontextmanager
    async def dataset(self, name: str, purpose: str) -> AsyncIterator[HeldLock]:
        asked = time.monotonic()
        async with self.hold(keys.dataset_lock(name), purpose) as held:
            self.on_dataset_wait(time.monotonic() - asked)
            yield held

    @contextlib.asynccontextmanager
    async def hold(self, key: str, purpose: str) -> AsyncIterator[HeldLock]:
        lease = await self.etcd.grant_lease(self.ttl)
        holder = {
            "instance": self.instance,
            "purpose": purpose,
            "acquired_at": datetime.now(UTC).isoformat(),
            "lease": lease,
        }
        held = HeldLock(key=key, lease=lease, holder=holder)
        # Kept alive from the start: waiting for a busy lock can take longer than the TTL, and a
        # lease that expired while waiting could not be written with the key.
        keepalive = asyncio.create_task(self._keep_alive(held), name=f"keepalive {key}")
        try:
            await self._acquire(key, held)
            yield held
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            # Revoking the lease deletes the key; if etcd is unreachable the lease expires anyway.
            await self._revoke_quietly(lease)

    async def _acquire(self, key: str, held: HeldLock) -> None:
        deadline = time.monotonic() + self.wait
        backoff = Backoff(0.05, 1.0, jitter=False, factor=1.5)
        looked_at: set[int] = set()  # versions of the key already found to be real locks
        while not await self.etcd.create(key, held.holder, lease=held.lease):
            held.check()
            await self._remove_if_not_a_lock(key, looked_at)
            if time.monotonic() >= deadline:
                current = await self.etcd.get(key)
                who = str(current.value)[:200] if current else "nobody (just released)"
                raise LockTimeout(f"waited {self.wait:g} s for the lock {key}, held by {who}")
            # Jitter around the bound (not Backoff's full jitter, which could poll at once): several
            # instances polling one key must not move in lockstep.
            await asyncio.sleep(backoff.next() * (0.5 + random.random()))  # noqa: S311 - not cryptographic

    async def _remove_if_not_a_lock(self, key: str, looked_at: set[int]) -> None:
        """A key that holds the lock must be on a lease of at most ``MAX_LOCK_TTL`` that still runs:
        one written on no lease (or a longer one) would block every merge of the dataset for good,
        so it is removed (compare-and-delete: only that version) and the removal logged."""
        current = await self.etcd.get(key)
        if current is None or current.mod_revision in looked_at:
            return
        why = None
        if not current.lease:
            why = "it is on no lease, so it would never expire"
        else:
            remaining, granted = await self.etcd.lease_ttl(current.lease)
            if remaining > MAX_LOCK_TTL or granted > MAX_LOCK_TTL:
                why = f"its lease runs {max(remaining, granted)} s, longer than any lock's ({MAX_LOCK_TTL} s)"
        if why is None:
            looked_at.add(current.mod_revision)
            return
        if await self.etcd.delete_if(key, current.mod_revision):
            log.warning("removed %s, which was no lock (%s); it said %s", key, why, str(current.value)[:200])

    async def _keep_alive(self, held: HeldLock) -> None:
        """Refresh the lease every ttl/3 s. ``expires`` is reckoned from when a refresh was *sent*,
        so it is never later than etcd's own deadline; the lock counts as lost a margin before it, and
        what runs under it (a push) is stopped then, never after the lease is gone."""
        interval = max(self.ttl / 3, 0.5)
        margin = min(LOST_MARGIN, self.ttl / 4)
        expires = time.monotonic() + self.ttl  # granted before this task started: conservative
        while True:
            await asyncio.sleep(max(0.0, min(interval, expires - margin - time.monotonic())))
            sent = time.monotonic()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancel that
                # ends this loop when the refresh answers in the same moment (cpython gh-86296),
                # and the lock, refreshed for ever, is then never released.
                async with asyncio.timeout(max(0.05, expires - margin - sent)):
                    remaining = await self.etcd.refresh_lease(held.lease)
            except (EtcdUnavailable, TimeoutError) as exc:
                log.warning(
                    "could not refresh the lease of lock %s: %s", held.key, getattr(exc, "message", exc)
                )
                remaining = -1
            if remaining > 0:
                expires = sent + remaining
            elif remaining == 0 or time.monotonic() >= expires - margin:
                held.mark_lost()
                log.warning("lock %s lost: its lease expired before it could be refreshed", held.key)
                return

    async def _revoke_quietly(self, lease: int) -> None:
        # If this fails (etcd down, or we are being cancelled) the lease simply expires.
        with contextlib.suppress(EtcdUnavailable):
            await self.etcd.revoke_lease(lease)

    async def holders(self) -> list[dict[str, Any]]:
        """Locks held right now, for ``GET /locks`` and ``maoctl lock list`` (a record that is no
        lock's, or on no lease, is left out and said once)."""
        held = []
        for kv in await self.etcd.list_prefix(keys.LOCKS):
            holder = records.parse(LockHolder, kv.key, kv.mod_revision, kv.value)
            if holder is None:
                continue
            if not kv.lease:
                records.refuse(kv.key, kv.mod_revision, "a lock on no lease (removed by the next merge)")
                continue
            held.append({"key": kv.key, **holder.model_dump()})
        return held
