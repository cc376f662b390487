"""Federation-wide, lease-bound locks (one per dataset's ``ground-truth``).

The lock key is created only if absent and is bound to a lease the holder keeps alive: the lease of
this instance's lock session (``lock_session``), shared by the locks it holds. A holder that crashes
stops refreshing, so etcd deletes the key when the lease runs out: nobody waits longer than the TTL
for a dead holder. The lock is not a fence on its own; the git push that follows is leased, so a
holder that lost its lease still cannot overwrite another's merge.

Taking a lock is one etcd transaction, which also reads the keys its holder needs to see as they were
when it got the lock (the vote: ground-truth's last announced advance); releasing it is one, which
also writes what must be written before anyone else may take it (the vote: its announcement).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..errors import EtcdUnavailable, Unavailable
from ..phases import phase
from ..retry import Backoff
from . import keys, records
from .etcd import Etcd
from .failover import LeaseNotFound
from .lock_session import IDLE, LOST_MARGIN, HeldLock, LockLost, LockSession
from .records import LockHolder

log = logging.getLogger(__name__)

T = TypeVar("T")


# The longest lease a lock can have (MAO_LOCK_TTL's upper bound): a key on a longer one, or on none,
# is not a lock any instance took, and is removed rather than waited for.
MAX_LOCK_TTL = 3600
# How long closing waits for etcd to revoke the sessions' leases.
CLOSE_WAIT = 2.0
# How many times one lock is tried on a new session when etcd says the session's lease is gone.
LEASE_RENEWALS = 3

__all__ = ["LOST_MARGIN", "HeldLock", "LockLost", "LockTimeout", "Locks"]


class LockTimeout(Unavailable):
    code = "lock_timeout"


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
        self._current: LockSession | None = None
        self._sessions: set[LockSession] = set()  # every session whose lease is still kept alive
        self._granting = asyncio.Lock()  # one grant at a time: concurrent locks share its session
        # Transactions whose caller was cancelled, finishing in the background (``_settle_later``).
        self._settling: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def dataset(self, name: str, purpose: str, reads: Sequence[str] = ()) -> AsyncIterator[HeldLock]:
        asked = time.monotonic()
        async with self.hold(keys.dataset_lock(name), purpose, reads) as held:
            self.on_dataset_wait(time.monotonic() - asked)
            yield held

    @contextlib.asynccontextmanager
    async def hold(self, key: str, purpose: str, reads: Sequence[str] = ()) -> AsyncIterator[HeldLock]:
        """Hold ``key`` until the block ends (or ``release`` is called in it). The keys ``reads`` are
        read in the transaction that takes the lock: ``held.read`` has them as the lock found them."""
        with phase("lock/take (etcd)"):
            held = await self._acquire(key, purpose, reads)
        try:
            yield held
        finally:
            # If etcd does not answer, the key goes with the session (ended): within the TTL.
            with contextlib.suppress(EtcdUnavailable):
                await self.release(held)

    async def release(self, held: HeldLock, puts: Mapping[str, Any] | None = None) -> bool:
        """Delete the lock's key and write ``puts`` in the same transaction, once; True when done,
        False (nothing written) when the lock was lost or already released. Raises
        ``EtcdUnavailable`` when etcd did not answer (then the session ends: see ``lock_session``)."""
        if held.released:
            return False
        held.released = True
        session = held.session
        session.held.discard(held)
        session.last_used = time.monotonic()
        if held.lost:
            return False
        write = asyncio.ensure_future(self.etcd.delete_putting(held.key, held.holder, puts or {}))
        try:
            with phase("lock/release (etcd)"):
                done = await asyncio.shield(write)
        except asyncio.CancelledError:
            self._settle_later(session, write, f"the release of {held.key}", None)
            raise
        except BaseException:
            session.end(f"the release of {held.key} got no answer")
            raise
        if not done:
            held.mark_lost()
            log.warning(
                "lock %s was no longer this holder's when it was released (its lease ran out)", held.key
            )
        return done

    async def close(self) -> None:
        """End every session and revoke its lease (a lock still held is lost); a lease etcd does not
        revoke within ``CLOSE_WAIT`` runs out by itself."""
        settling = list(self._settling)  # their sessions end here anyway: no need to wait for etcd
        for settle in settling:
            settle.cancel()
        await asyncio.gather(*settling, return_exceptions=True)
        for session in list(self._sessions):
            session.end("the instance closes")
            if (task := session.task) is None:
                continue
            try:
                async with asyncio.timeout(CLOSE_WAIT):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._current = None

    # -- taking a lock ----------------------------------------------------------------------------
    async def _acquire(self, key: str, purpose: str, reads: Sequence[str]) -> HeldLock:
        deadline = time.monotonic() + self.wait
        backoff = Backoff(0.05, 1.0, jitter=False, factor=1.5)
        looked_at: set[int] = set()  # versions of the key already found to be real locks
        renewals = 0
        while True:
            session = await self._session()
            holder = {
                "instance": self.instance,
                "purpose": purpose,
                "acquired_at": datetime.now(UTC).isoformat(),
                "lease": session.lease,
                # Tells this holder's key from another's of the same instance on the same lease.
                "token": secrets.token_hex(8),
            }
            held = HeldLock(key=key, lease=session.lease, holder=holder, session=session)
            session.held.add(held)  # before any wait: a session in use does not end as unused
            write = asyncio.ensure_future(self.etcd.create_reading(key, holder, session.lease, reads))
            try:
                created, read = await asyncio.shield(write)
            except LeaseNotFound:
                session.held.discard(held)
                session.end("etcd no longer knows its lease")
                renewals += 1
                if renewals > LEASE_RENEWALS:
                    raise
                continue
            except asyncio.CancelledError:
                session.held.discard(held)
                self._settle_later(session, write, f"taking {key}", self._untake(key, holder))
                raise
            except BaseException:
                # The key may have been written: it must not outlive the TTL on a session kept alive.
                session.held.discard(held)
                session.end(f"taking {key} got no answer")
                raise
            if created:
                held.read = read
                if not session.usable():  # taken too close to the lease's end: never believed held
                    session.end(f"{key} was taken too close to the end of its lease")
                return held
            session.held.discard(held)
            await self._remove_if_not_a_lock(key, looked_at)
            if time.monotonic() >= deadline:
                current = await self.etcd.get(key)
                who = str(current.value)[:200] if current else "nobody (just released)"
                raise LockTimeout(f"waited {self.wait:g} s for the lock {key}, held by {who}")
            # Jitter around the bound (not Backoff's full jitter, which could poll at once): several
            # instances polling one key must not move in lockstep.
            await asyncio.sleep(backoff.next() * (0.5 + random.random()))  # noqa: S311 - not cryptographic

    def _untake(
        self, key: str, holder: dict[str, Any]
    ) -> Callable[[tuple[bool, dict[str, Any]]], Awaitable[object]]:
        async def untake(answer: tuple[bool, dict[str, Any]]) -> None:
            if answer[0]:  # written: delete exactly this holder's record (its token is unique)
                await self.etcd.delete_putting(key, holder, {})

        return untake

    def _settle_later(
        self,
        session: LockSession,
        write: asyncio.Future[T],
        what: str,
        undo: Callable[[T], Awaitable[object]] | None,
    ) -> None:
        """The caller of a take or release was cancelled (its run cancelled or timed out) while its
        transaction was in flight. The session is shared by every lock this instance holds, so that
        cancel must not end it: the transaction finishes in the background and ``undo`` removes what
        it wrote. Only if etcd leaves it (or the undo) unanswered for the TTL may a key of unknown
        fate be left on the session, which then ends (see ``lock_session``)."""

        async def settle() -> None:
            try:
                async with asyncio.timeout(session.ttl):
                    answer = await write
                    if undo is not None:
                        await undo(answer)
            except asyncio.CancelledError:  # the instance closes (or the write itself was cancelled)
                session.end(f"{what} was cancelled before etcd answered")
                raise
            except Exception:  # noqa: BLE001 - no answer (or none in time): the key's fate is unknown
                session.end(f"{what} got no answer")

        task = asyncio.create_task(settle(), name="lock settle")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _session(self) -> LockSession:
        """The session new locks are taken on: the current one while usable, else a new one."""
        async with self._granting:
            current = self._current
            if current is not None and current.usable():
                return current
            asked = time.monotonic()
            with phase("lock/session lease grant (etcd)"):
                lease = await self.etcd.grant_lease(self.ttl)
            session = LockSession(self.etcd, lease, self.ttl, asked)
            self._current = session
            self._sessions.add(session)
            session.task = asyncio.create_task(session.keep_alive(self._unused), name="lock session")
            session.task.add_done_callback(lambda _: self._sessions.discard(session))
            return session

    def _unused(self, session: LockSession) -> bool:
        """Whether a session with no lock held may end: replaced by a newer one, or idle."""
        return session is not self._current or time.monotonic() - session.last_used >= IDLE

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
