"""One instance's locks share one session lease, so what goes wrong with one lock must not end it:
a run cancelled (or timed out) while its take or release transaction is in flight leaves the
session, and every other lock on it, held; the key the transaction may have written is removed once
etcd answers (compare-and-delete on the holder record, whose token is unique). Only a transaction
etcd leaves unanswered for the TTL ends the session. And a refresh etcd answers with "lease not
found" ends it at once: that is an answer (the lease was revoked), not an outage. With a stand-in
etcd whose transactions wait until the test lets them answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from orchestrator.federation.failover import LeaseNotFound
from orchestrator.federation.lock_session import LockSession
from orchestrator.federation.locks import Locks


class SlowEtcd:
    """Takes and releases wait for ``answer`` (when ``slow``); ``unanswered`` makes them never answer."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.slow = False
        self.answer = asyncio.Event()
        self.started = asyncio.Event()
        self.revoked: list[int] = []

    async def _wait(self) -> None:
        if self.slow:
            self.started.set()
            await self.answer.wait()

    async def grant_lease(self, ttl: int) -> int:
        return 7

    async def refresh_lease(self, lease: int) -> int:
        return 3

    async def revoke_lease(self, lease: int) -> None:
        self.revoked.append(lease)
        self.keys.clear()

    async def create_reading(
        self, key: str, value: Any, lease: int, reads: tuple[str, ...] = ()
    ) -> tuple[bool, dict[str, Any]]:
        await self._wait()
        if key in self.keys:
            return False, {}
        self.keys[key] = value
        return True, {}

    async def delete_putting(self, key: str, value: Any, puts: dict[str, Any]) -> bool:
        await self._wait()
        if self.keys.get(key) != value:
            return False
        del self.keys[key]
        self.keys.update(puts)
        return True


async def _eventually(condition: Any, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("step", ["take", "release"])
@pytest.mark.parametrize("answer", ["later", "with the cancel", "never"])
async def test_a_cancelled_take_or_release_leaves_the_other_locks_held(step: str, answer: str) -> None:
    etcd = SlowEtcd()
    ttl = 1
    locks = Locks(etcd, "n1", ttl=ttl)  # type: ignore[arg-type]
    other = locks.hold("/mao/v1/locks/other", "another run's vote")
    other_held = await other.__aenter__()
    try:
        if step == "take":
            etcd.slow = True
            run = asyncio.create_task(locks._acquire("/mao/v1/locks/x", "test", ()))
        else:
            held = await locks._acquire("/mao/v1/locks/x", "test", ())
            etcd.slow = True
            run = asyncio.create_task(locks.release(held, {"/mao/v1/announced": 1}))
        await etcd.started.wait()
        if answer == "with the cancel":  # etcd commits in the same loop turn the run is cancelled
            etcd.answer.set()
        run.cancel()  # the run times out while its transaction is in flight
        with pytest.raises(asyncio.CancelledError):
            await run
        assert not other_held.lost and not other_held.session.ended
        if answer != "never":
            etcd.answer.set()  # the transaction commits after all: its key is removed
            await _eventually(lambda: "/mao/v1/locks/x" not in etcd.keys, "the key to be removed")
            await asyncio.sleep(ttl * 1.5)
            assert not other_held.lost and not other_held.session.ended and not etcd.revoked
        else:
            # No answer within the TTL: the key's fate is unknown, so the session ends (its lease runs
            # out or is revoked, and the key with it); the other lock is lost, as it was before.
            await _eventually(lambda: other_held.session.ended, "the session to end")
            assert other_held.lost
    finally:
        etcd.slow = False
        await other.__aexit__(None, None, None)
        await locks.close()


class LeaseGone(SlowEtcd):
    async def refresh_lease(self, lease: int) -> int:
        raise LeaseNotFound("etcd failed: requested lease not found")


async def test_a_refresh_answered_lease_not_found_ends_the_session_at_once() -> None:
    session = LockSession(LeaseGone(), lease=7, ttl=30, asked_at=time.monotonic())  # type: ignore[arg-type]
    await session._refresh()
    assert session.ended  # not believed held for the 29 s left of the TTL
