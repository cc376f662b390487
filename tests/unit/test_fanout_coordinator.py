"""Fan-out's coordinator without Docker: parallelism bound, per-shard retries, speculation, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pydantic
import pytest

from orchestrator.domain.fanout import FanOut
from orchestrator.runs.fanout.coordinator import (
    Coordinator,
    FanOutSummary,
    ShardOutcome,
    ShardRun,
    SpeculationPolicy,
)
from orchestrator.runs.fanout.files import Shard, split

FAST = SpeculationPolicy(fraction=0.5, factor=2.0, min_extra=0.05)
OFF = SpeculationPolicy(enabled=False)


def shards(count: int) -> list[Shard]:
    return split([f"f{n:03}" for n in range(count)], 1)


class Fake:
    """A run_shard that records what ran; ``behave(run)`` decides each container's fate."""

    def __init__(self, behave: Callable[[ShardRun], Awaitable[ShardOutcome]] | None = None) -> None:
        self.runs: list[ShardRun] = []
        self.cancelled: list[ShardRun] = []
        self.reasons: list[str] = []
        self.running = 0
        self.peak = 0
        self._behave = behave or self.ok

    @staticmethod
    async def ok(run: ShardRun) -> ShardOutcome:
        await asyncio.sleep(0.01)
        return ShardOutcome(ok=True, output=Path(f"/out/{run.shard.index}-{run.attempt}"))

    async def __call__(self, run: ShardRun) -> ShardOutcome:
        self.runs.append(run)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await self._behave(run)
        except asyncio.CancelledError as cancel:
            self.cancelled.append(run)  # the engine kills the container here
            self.reasons.append(str(cancel.args[0]) if cancel.args else "")
            raise
        finally:
            self.running -= 1


async def test_every_shard_runs_once_within_max_parallel() -> None:
    fake = Fake()
    result = await Coordinator(shards(20), fake, max_parallel=3, speculation=OFF).run()
    assert result.ok and result.error is None
    assert sorted(r.shard.index for r in fake.runs) == list(range(1, 21))
    assert {r.attempt for r in fake.runs} == {1}
    assert fake.peak == 3
    assert result.summary == FanOutSummary(count=20, succeeded=20, failed=0, speculative=0)
    assert sorted(result.winners) == list(range(1, 21))
    assert result.winners[7].output == Path("/out/7-1")


async def test_no_shards_is_success_without_a_container() -> None:
    fake = Fake()
    result = await Coordinator([], fake, max_parallel=2).run()
    assert result.ok and fake.runs == [] and result.summary.count == 0


async def test_a_failing_shard_is_retried_on_its_own() -> None:
    async def flaky(run: ShardRun) -> ShardOutcome:
        if run.shard.index == 2 and run.attempt == 1:
            return ShardOutcome(ok=False, error="exit code 1")
        return await Fake.ok(run)

    fake = Fake(flaky)
    delays: list[tuple[int, int]] = []

    def delay(shard: Shard, failures: int) -> float:
        delays.append((shard.index, failures))
        return 0.02

    result = await Coordinator(shards(4), fake, max_parallel=2, retries=1, delay=delay, speculation=OFF).run()
    assert result.ok
    assert [(r.shard.index, r.attempt) for r in fake.runs if r.shard.index == 2] == [(2, 1), (2, 2)]
    assert sorted(r.shard.index for r in fake.runs if r.shard.index != 2) == [1, 3, 4]  # others once
    assert delays == [(2, 1)]
    assert result.summary == FanOutSummary(count=4, succeeded=4, failed=0, speculative=0)


async def test_a_shard_out_of_attempts_fails_the_step_and_stops_the_others() -> None:
    async def behave(run: ShardRun) -> ShardOutcome:
        if run.shard.index == 1:
            await asyncio.sleep(0.02)
            return ShardOutcome(ok=False, error="exit code 3")
        await asyncio.sleep(30)  # would run long: must be cancelled
        return ShardOutcome(ok=True)

    fake = Fake(behave)
    result = await Coordinator(shards(5), fake, max_parallel=3, retries=2, speculation=OFF).run()
    assert not result.ok
    assert result.error == "shard 1/5 failed (3 failed attempts): exit code 3"
    assert [r.attempt for r in fake.runs if r.shard.index == 1] == [1, 2, 3]
    assert {r.shard.index for r in fake.cancelled} == {2, 3}
    assert set(fake.reasons) == {"cancelled: another shard of the step failed"}
    assert {r.shard.index for r in fake.runs} == {1, 2, 3}  # shards 4 and 5 never started
    assert fake.running == 0
    assert result.summary.failed == 1 and result.summary.succeeded == 0


async def test_an_outcome_that_cannot_pass_is_not_retried() -> None:
    async def behave(run: ShardRun) -> ShardOutcome:
        return ShardOutcome(ok=False, error="image gone", retryable=False)

    fake = Fake(behave)
    result = await Coordinator(shards(1), fake, max_parallel=1, retries=5).run()
    assert not result.ok and not result.retryable
    assert len(fake.runs) == 1


async def test_an_exception_in_run_shard_fails_the_step_without_retry() -> None:
    async def behave(run: ShardRun) -> ShardOutcome:
        raise RuntimeError("database away")

    fake = Fake(behave)
    result = await Coordinator(shards(2), fake, max_parallel=1, retries=3).run()
    assert not result.ok and "database away" in (result.error or "")
    assert len(fake.runs) == 1


async def test_a_straggler_gets_a_speculative_copy_and_the_loser_is_cancelled() -> None:
    async def behave(run: ShardRun) -> ShardOutcome:
        if run.shard.index == 3 and not run.speculative:
            await asyncio.sleep(60)  # stuck: only its twin can finish it
        return await Fake.ok(run)

    fake = Fake(behave)
    result = await Coordinator(shards(4), fake, max_parallel=4, speculation=FAST).run()
    assert result.ok
    copies = [(r.attempt, r.speculative) for r in fake.runs if r.shard.index == 3]
    assert copies == [(1, False), (2, True)]
    assert [(r.shard.index, r.speculative) for r in fake.cancelled] == [(3, False)]
    assert fake.reasons == ["cancelled: the other copy of this shard finished first"]
    assert result.winners[3].output == Path("/out/3-2")
    assert result.summary == FanOutSummary(count=4, succeeded=4, failed=0, speculative=1)
    assert fake.running == 0


async def test_no_speculation_while_shards_wait_for_a_slot_or_when_disabled() -> None:
    async def behave(run: ShardRun) -> ShardOutcome:
        await asyncio.sleep(0.3 if run.shard.index == 1 else 0.01)
        return ShardOutcome(ok=True)

    # One slot: the slow first shard blocks everyone, so nothing finished and nothing to compare with.
    fake = Fake(behave)
    result = await Coordinator(shards(3), fake, max_parallel=1, speculation=FAST).run()
    assert result.ok and result.summary.speculative == 0 and len(fake.runs) == 3
    fake = Fake(behave)
    result = await Coordinator(shards(4), fake, max_parallel=4, speculation=OFF).run()
    assert result.ok and result.summary.speculative == 0 and len(fake.runs) == 4


async def test_a_speculative_copy_failing_leaves_its_twin_running() -> None:
    release = asyncio.Event()

    async def behave(run: ShardRun) -> ShardOutcome:
        if run.shard.index == 2 and not run.speculative:
            await release.wait()
            return ShardOutcome(ok=True, output=Path("/out/original"))
        if run.speculative:
            release.set()  # the original finishes right after its copy fails
            return ShardOutcome(ok=False, error="copy broke")
        return await Fake.ok(run)

    fake = Fake(behave)
    result = await Coordinator(shards(3), fake, max_parallel=3, retries=0, speculation=FAST).run()
    assert result.ok, result.error
    assert result.winners[2].output == Path("/out/original")
    assert result.summary.speculative == 1


async def test_cancelling_the_coordinator_cancels_every_container() -> None:
    async def behave(run: ShardRun) -> ShardOutcome:
        await asyncio.sleep(60)
        return ShardOutcome(ok=True)

    fake = Fake(behave)
    task = asyncio.create_task(Coordinator(shards(6), fake, max_parallel=4).run())
    while len(fake.runs) < 4:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fake.cancelled) == 4 and fake.running == 0


async def test_progress_is_reported_as_shards_end() -> None:
    seen: list[FanOutSummary] = []

    async def progress(summary: FanOutSummary) -> None:
        seen.append(summary)

    await Coordinator(shards(3), Fake(), max_parallel=1, progress=progress, speculation=OFF).run()
    # Written in the background and coalesced, but the last one written is the final count.
    counts = [s.succeeded for s in seen]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 3
    assert {s.count for s in seen} == {3}


def test_the_fan_out_field_has_bounds_and_no_unknown_keys() -> None:
    assert FanOut.model_validate({"glob": "*.csv"}) == FanOut(glob="*.csv", split_size=1, max_parallel=4)
    for bad in (
        {"glob": "../*", "split_size": 5},
        {"glob": "*", "split_size": 0},
        {"glob": "*", "max_parallel": 1000},
        {"glob": "*", "split_size": "5"},
        {"glob": "*", "max_paralel": 2},
        {"split_size": 2},
    ):
        with pytest.raises(pydantic.ValidationError):
            FanOut.model_validate(bad)


async def test_a_shard_out_of_attempts_runs_once_more_with_the_fallback_tool() -> None:
    async def behave(run: ShardRun) -> ShardOutcome:
        if run.shard.index == 2 and not run.fallback:
            return ShardOutcome(ok=False, error="image missing", retryable=False)
        return await Fake.ok(run)

    fake = Fake(behave)
    result = await Coordinator(shards(3), fake, max_parallel=2, retries=3, fallback=True).run()
    assert result.ok, result.error
    assert [(r.attempt, r.fallback) for r in fake.runs if r.shard.index == 2] == [(1, False), (2, True)]
    assert not any(r.fallback for r in fake.runs if r.shard.index != 2)

    async def broken(run: ShardRun) -> ShardOutcome:
        return ShardOutcome(ok=False, error=f"exit 1 (fallback={run.fallback})")

    result = await Coordinator(shards(1), Fake(broken), max_parallel=1, retries=1, fallback=True).run()
    assert result.error == (
        "shard 1/1 failed (3 failed attempts, the last with the fallback tool): exit 1 (fallback=True)"
    )
