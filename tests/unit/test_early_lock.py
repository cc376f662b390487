"""The vote's lock taken early (while the step's output commit is recorded): whatever the order of the
take, the claim (or the drop) and the bound, every lock taken is released exactly once, by the vote that
claimed it or by the early lock itself; a claimed lock is never one already given back; an error
taking it reaches the vote, never a step that no longer votes. Generated timings, a stand-in lock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import EtcdUnavailable
from orchestrator.merging import early_lock
from orchestrator.merging.early_lock import EarlyLock


class Held:
    def __init__(self) -> None:
        self.released = 0


class FakeLocks:
    def __init__(self, take_ms: int, fails: bool) -> None:
        self.take_ms, self.fails = take_ms, fails
        self.taken: list[Held] = []

    async def take_dataset(self, name: str, purpose: str, reads: Any = ()) -> Held:
        await asyncio.sleep(self.take_ms / 1000)
        if self.fails:
            raise EtcdUnavailable("etcd is unreachable")
        held = Held()
        self.taken.append(held)
        return held

    async def release(self, held: Held, puts: Any = None) -> bool:
        held.released += 1
        return True


@settings(max_examples=60, deadline=None)
@given(
    take_ms=st.integers(0, 30),
    then_ms=st.integers(0, 30),  # how long the database write takes before the vote (or the drop)
    votes=st.booleans(),
    fails=st.booleans(),
)
def test_every_lock_taken_early_is_released_once(
    take_ms: int, then_ms: int, votes: bool, fails: bool
) -> None:
    async def scenario() -> None:
        locks = FakeLocks(take_ms, fails)
        early = EarlyLock(locks, "d", "merge", ())  # type: ignore[arg-type]
        await asyncio.sleep(then_ms / 1000)
        if not votes:
            await early.drop()
        else:
            try:
                held = await early.claim()
            except EtcdUnavailable:
                assert fails  # the vote sees it (and queues its merge)
                held = None
            if held is not None:
                assert held.released == 0  # never one given back
                await locks.release(held)  # the vote's release
        await asyncio.sleep(0)
        assert len(locks.taken) == (0 if fails else 1)
        assert all(h.released == 1 for h in locks.taken)

    bound = early_lock.EARLY_HOLD
    early_lock.EARLY_HOLD = 0.015  # shorter than some of the generated writes: both sides of the bound
    try:
        asyncio.run(scenario())
    finally:
        early_lock.EARLY_HOLD = bound


async def test_a_slow_database_does_not_keep_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early_lock, "EARLY_HOLD", 0.05)
    locks = FakeLocks(0, fails=False)
    early = EarlyLock(locks, "d", "merge", ())  # type: ignore[arg-type]
    await asyncio.sleep(0.2)  # the write that comes before the vote takes longer than the bound
    (held,) = locks.taken
    assert held.released == 1  # given back meanwhile: other members did not wait on this database
    assert await early.claim() is None  # the vote takes it anew
