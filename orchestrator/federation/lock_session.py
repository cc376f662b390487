"""The lease an instance's locks are bound to: granted once, kept alive, shared by the locks it holds.

Granting a lease for each lock and revoking it at the release were two of a vote's five etcd round
trips (both writes etcd commits to disk). Like etcd's own ``concurrency.Session``, the instance keeps
one lease alive instead and writes each lock key on it; the release deletes the key.

What a lock promised on a lease of its own still holds:

- A holder that dies stops refreshing: the lease runs out within the TTL and every key on it goes.
- The session's expiry is reckoned from when each refresh was *sent*, so it is never later than
  etcd's; a margin before it the session *ends*: every lock held on it is marked lost (what runs under
  it, a push, is stopped), and the next lock is taken on a new session.
- A lock key whose fate is unknown (a create or delete etcd did not answer) would otherwise live as
  long as the session. So the session ends then too, and its lease is revoked, or runs out within the
  TTL: such a key never outlives the TTL, as with a lease per lock. Locks held on the same session
  meanwhile are marked lost with it: their merges are queued, which costs time, never safety (this
  only happens while etcd does not answer).
- A take or release whose caller is cancelled (its run cancelled or timed out) does not end the
  session: ``Locks`` lets the transaction finish and removes the key it wrote (by its holder's unique
  token). Only if etcd leaves that unanswered for the TTL does the session end as above (the key then
  goes within twice the TTL).
- A session no lock used for ``IDLE`` seconds ends: a quiet instance keeps no lease alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import EtcdUnavailable, Unavailable
from .answers import KeyValue
from .etcd import Etcd
from .failover import LeaseNotFound

log = logging.getLogger("orchestrator.federation.locks")

# How long before the lease's end a session whose refreshes fail counts as ended (its locks lost).
LOST_MARGIN = 1.0
# A session no lock used for this long is revoked (the next lock grants a new one).
IDLE = 60.0


class LockLost(Unavailable):
    code = "lock_lost"


@dataclass(eq=False)
class HeldLock:
    key: str
    lease: int
    holder: dict[str, Any]
    session: LockSession
    # The keys asked for with the lock, as they were when it was taken (``Locks.hold``'s ``reads``).
    read: dict[str, KeyValue | None] = field(default_factory=dict)
    lost: bool = False
    # Set together with ``lost``; worker threads (a git push) wait on it to stop what they do.
    lost_event: threading.Event = field(default_factory=threading.Event)
    released: bool = False

    def mark_lost(self) -> None:
        self.lost = True
        self.lost_event.set()

    def check(self) -> None:
        """Raise if the lease could not be kept alive; call before acting under the lock."""
        if self.lost:
            raise LockLost(f"lost the lease of lock {self.key} (etcd did not refresh it in time)")


class LockSession:
    """One lease and the locks held on it; ``keep_alive`` refreshes it until it ends."""

    def __init__(self, etcd: Etcd, lease: int, ttl: int, asked_at: float) -> None:
        self.etcd = etcd
        self.lease = lease
        self.ttl = ttl
        self.margin = min(LOST_MARGIN, ttl / 4)
        self.expires = asked_at + ttl  # asked for before the grant: never later than etcd's deadline
        self.held: set[HeldLock] = set()  # also those still being taken
        self.last_used = time.monotonic()
        self.ended = False
        self._ended = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def usable(self) -> bool:
        """Whether a new lock may be taken on it: not ended and not about to."""
        return not self.ended and time.monotonic() < self.expires - self.margin

    def end(self, why: str) -> None:
        """No lock is held on it any more: those that were are lost; the lease is revoked (by
        ``keep_alive``) or runs out."""
        if self.ended:
            return
        self.ended = True
        self._ended.set()
        for held in self.held:
            held.mark_lost()
            log.warning("lock %s lost: %s", held.key, why)
        log.debug("lock session (lease %x) ended: %s", self.lease, why)

    async def keep_alive(self, idle_when: Callable[[LockSession], bool]) -> None:
        """Refresh the lease every ttl/3 s until the session ends (a refresh failed until the margin
        before its expiry, etcd said it is gone, or ``idle_when(self)`` says nobody needs it), then
        revoke it."""
        interval = max(self.ttl / 3, 0.5)
        while not self.ended:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    max(0.0, min(interval, self.expires - self.margin - time.monotonic()))
                ):
                    await self._ended.wait()
            if self.ended:
                break
            if not self.held and idle_when(self):
                self.end("not used")
                break
            await self._refresh()
        # Deletes any key left on it at once; if etcd does not answer (or this task is cancelled: the
        # loop is closing), the lease runs out.
        with contextlib.suppress(EtcdUnavailable, TimeoutError):
            async with asyncio.timeout(self.ttl):
                await self.etcd.revoke_lease(self.lease)

    async def _refresh(self) -> None:
        sent = time.monotonic()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancel that ends
            # this loop when the refresh answers in the same moment (cpython gh-86296), and the
            # lease, refreshed for ever, then keeps its keys for ever.
            async with asyncio.timeout(max(0.05, self.expires - self.margin - sent)):
                remaining = await self.etcd.refresh_lease(self.lease)
        except LeaseNotFound:
            # An answer, not an outage (LeaseNotFound is an EtcdUnavailable): the lease was revoked or
            # etcd restored from a snapshot, and the keys on it are gone now.
            self.end("etcd no longer knows its lease")
            return
        except (EtcdUnavailable, TimeoutError) as exc:
            log.warning(
                "could not refresh the lease of the locks held (%d): %s",
                len(self.held),
                getattr(exc, "message", exc),
            )
            remaining = -1
        if remaining > 0:
            self.expires = sent + remaining
        elif remaining == 0 or time.monotonic() >= self.expires - self.margin:
            self.end("its lease expired before it could be refreshed")
