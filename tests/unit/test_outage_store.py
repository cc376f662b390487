"""What keeps runs going while etcd is away, on a real SQLite store: the registration copy, queued
merges (settled in one transaction)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.states import MergeState, RunStatus, StepStatus
from orchestrator.store import Store
from orchestrator.store.outage import PendingMerges, RegistryCache
from orchestrator.store.run_changes import RunChange, StepChange, StepFacts
from orchestrator.store.runs import RunRecords

PIPELINE = Pipeline.model_validate(
    {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
)


@pytest.fixture
async def store(tmp_path: Path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    yield store
    await store.close()


async def new_run(store: Store, run_id: str) -> None:
    records = RunRecords(store)
    await records.create(run_id, PIPELINE, "manual", PIPELINE.graph(), ["s-me"])
    await records.change_run(RunChange(run_id, RunStatus.RUNNING))
    await records.change_run(RunChange(run_id, RunStatus.SUCCEEDED))
    await records.change_step(StepChange(run_id, "s", StepStatus.RUNNING))
    facts = StepFacts(merge_state=MergeState.QUEUED)
    await records.change_step(StepChange(run_id, "s", StepStatus.SUCCEEDED, facts))


async def test_registry_cache_keeps_the_last_read(store: Store) -> None:
    cache = RegistryCache(store)
    assert await cache.get("tool", "t") is None
    await cache.put("tool", "t", {"name": "t", "image": "a"})
    await cache.put("tool", "t", {"name": "t", "image": "b"})
    value, cached_at = await cache.get("tool", "t")  # type: ignore[misc]
    assert value == {"name": "t", "image": "b"} and cached_at.startswith("20")
    await cache.drop("tool", "t")
    assert await cache.get("tool", "t") is None


async def test_a_later_run_moves_the_queued_merge_forward(store: Store) -> None:
    pending = PendingMerges(store)
    for run_id, commit in (("r1", "c1"), ("r2", "c2")):
        await new_run(store, run_id)
        await pending.queue(
            "d", "s-me", "/m.git", commit, f"merge {run_id}", {"MAO-Run": run_id}, (run_id, "s")
        )
    (queued,) = await pending.all()
    assert queued["commit"] == "c2" and queued["steps"] == [["r1", "s"], ["r2", "s"]]
    assert queued["trailers"] == {"MAO-Run": "r2"}
    await pending.settle("d", "s-me", "c2", queued["steps"], "m1")
    assert await pending.all() == []
    for run_id in ("r1", "r2"):
        run = await store.get_run(run_id)
        assert run is not None and run.status == "succeeded"
        assert run.steps[0].merge == "merged" and run.steps[0].merge_commit == "m1"


async def test_settling_an_older_commit_keeps_the_newer_one_queued(store: Store) -> None:
    pending = PendingMerges(store)
    await new_run(store, "r1")
    await pending.queue("d", "s-me", "/m.git", "c1", "m", {}, ("r1", "s"))
    (seen,) = await pending.all()
    await new_run(store, "r2")
    await pending.queue("d", "s-me", "/m.git", "c2", "m", {}, ("r2", "s"))  # while r1's merge ran
    await pending.settle("d", "s-me", seen["commit"], seen["steps"], "m1")
    (left,) = await pending.all()
    assert left["commit"] == "c2" and left["steps"] == [["r2", "s"]]


async def test_a_queued_merge_that_conflicts_fails_its_runs(store: Store) -> None:
    pending = PendingMerges(store)
    await new_run(store, "r1")
    await pending.queue("d", "s-me", "/m.git", "c1", "m", {}, ("r1", "s"))
    await pending.failed_attempt("d", "s-me", "etcd is unreachable")
    (queued,) = await pending.all()
    assert queued["attempts"] == 1 and queued["last_error"] == "etcd is unreachable"
    await pending.settle("d", "s-me", "c1", queued["steps"], None, ["a.txt"], "conflicts in a.txt")
    run = await store.get_run("r1")
    assert run is not None and run.status == "failed" and run.error == "conflicts in a.txt"
    (step,) = run.steps
    assert step.status == "conflict" and step.merge == "conflict" and step.conflicts == ("a.txt",)


async def test_registry_cache_puts_at_the_same_moment_never_fail(store: Store) -> None:
    # Two inits (or runs) reading the same new tool at once each keep a copy: one statement, no race.
    cache = RegistryCache(store)
    values = [{"name": "fresh", "image": f"i{n}"} for n in range(8)]
    await asyncio.gather(*(cache.put("tool", "fresh", value) for value in values))
    found = await cache.get("tool", "fresh")
    assert found is not None and found[0] in values
