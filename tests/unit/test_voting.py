"""Voting into ground-truth with the federation away: queue, retry when etcd answers, settle once.
Real SQLite store; the lock, git and etcd are stand-ins."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.datasets import MergeResult
from orchestrator.domain.pipeline import Dataset, Pipeline
from orchestrator.domain.states import RunStatus, StepStatus
from orchestrator.errors import EtcdUnavailable
from orchestrator.federation.answers import KeyValue
from orchestrator.merging import voting as voting_module
from orchestrator.merging.voting import Voting
from orchestrator.metrics import Metrics
from orchestrator.store import Store
from orchestrator.store.outage import PendingMerges
from orchestrator.store.run_changes import RunChange, StepChange, StepFacts
from orchestrator.store.runs import RunRecords

PIPELINE = Pipeline.model_validate(
    {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
)
DATASET = Dataset(name="d", master="/srv/d.git")


class Held:
    lost_event = threading.Event()

    def __init__(self, read: dict[str, KeyValue | None]) -> None:
        self.read = read

    def check(self) -> None:
        pass


class FakeLocks:
    """Reads what is asked with the lock from the etcd stand-in, writes what is put with the release."""

    def __init__(self, etcd: FakeEtcd) -> None:
        self.down = False
        self.etcd = etcd

    @contextlib.asynccontextmanager
    async def dataset(self, name: str, purpose: str, reads: tuple[str, ...] = ()) -> AsyncIterator[Held]:
        if self.down:
            raise EtcdUnavailable("etcd is unreachable")
        yield Held({key: await self.etcd.get(key) for key in reads})

    async def release(self, held: Held, puts: dict[str, object]) -> bool:
        for key, value in puts.items():
            await self.etcd.put(key, value)
        return True


class FakeRepo:
    def __init__(self) -> None:
        self.pushed: list[str] = []
        self.merges: list[str] = []
        self.conflicts: list[str] = []

    def push_branch(self, branch: str, commit: str | None = None, trailers: object = None) -> str:
        self.pushed.append(branch)
        return commit or "tip"

    def merge_and_push(
        self,
        branch: str,
        message: str,
        trailers: dict[str, str],
        abort: object = None,
        commit: str | None = None,
        announced: str | None = None,
    ) -> MergeResult:
        if self.conflicts:
            return MergeResult(merged=False, commit="gt0", conflicts=self.conflicts)
        self.merges.append(trailers["MAO-Run"])
        return MergeResult(merged=True, commit=f"merge{len(self.merges)}")


class FakeDatasets:
    def __init__(self) -> None:
        self.repo = FakeRepo()

    async def run(self, name: str, master: str, fn: Callable[[FakeRepo], Any]) -> Any:
        return fn(self.repo)


class FakeRegistrations:
    async def dataset(self, name: str) -> Dataset:
        return DATASET


class FakeEtcd:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.announced: list[tuple[str, object]] = []  # ground-truth advances (data triggers' key)

    async def put(self, key: str, value: object, lease: int | None = None) -> int:
        self.announced.append((key, value))
        return len(self.announced)

    async def get(self, key: str) -> KeyValue | None:
        # The last advance announced (the vote reads it under the lock: a fetch is skipped at it).
        values = [value for put, value in self.announced if put == key]
        return KeyValue(key, values[-1], len(self.announced), 1, 0) if values else None

    def on_available(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)


@pytest.fixture
async def store(tmp_path: Path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    yield store
    await store.close()


async def step_of(store: Store, run_id: str) -> dict[str, Any]:
    run = await store.get_run(run_id)
    assert run is not None
    return {**run.steps[0].to_json(), "run_status": run.status}


async def vote(voting: Voting, store: Store, run_id: str, commit: str) -> str:
    records = RunRecords(store)
    await records.create(run_id, PIPELINE, "manual", PIPELINE.graph(), ["s-me"])
    await records.change_run(RunChange(run_id, RunStatus.RUNNING))
    step = PIPELINE.steps[0].name
    await records.change_step(StepChange(run_id, step, StepStatus.RUNNING))
    result = await voting.vote((run_id, step), DATASET, "s-me", commit, "merge", {"MAO-Run": run_id})
    facts = StepFacts(merge_state=result.state, merge_commit=result.commit)
    await records.change_step(StepChange(run_id, step, StepStatus.SUCCEEDED, facts))
    await records.change_run(RunChange(run_id, RunStatus.SUCCEEDED))
    return result.state


def make_voting(store: Store) -> tuple[Voting, FakeLocks, FakeDatasets, FakeEtcd]:
    datasets, etcd = FakeDatasets(), FakeEtcd()
    locks = FakeLocks(etcd)
    voting = Voting(datasets, locks, PendingMerges(store), FakeRegistrations(), etcd)  # type: ignore[arg-type]
    return voting, locks, datasets, etcd


async def test_queued_while_away_and_merged_once_when_etcd_answers(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(voting_module, "RETRY_FIRST", 3600.0)  # only the wake-up may trigger a retry
    voting, locks, datasets, etcd = make_voting(store)
    await voting.start()
    try:
        locks.down = True
        assert await vote(voting, store, "r1", "c1") == "queued"
        assert await vote(voting, store, "r2", "c2") == "queued"
        assert datasets.repo.pushed == ["s-me", "s-me"] and datasets.repo.merges == []
        locks.down = False
        for callback in etcd.callbacks:  # what Etcd does when a call succeeds again
            callback()
        for _ in range(100):
            if await PendingMerges(store).all() == []:
                break
            await asyncio.sleep(0.02)
        assert datasets.repo.merges == ["r2"]  # one merge of the tip covers both runs
        for run_id in ("r1", "r2"):
            step = await step_of(store, run_id)
            assert step["merge"] == "merged" and step["merge_commit"] == "merge1"
            assert step["run_status"] == "succeeded"
    finally:
        await voting.close()


async def test_a_later_direct_merge_settles_what_was_queued(store: Store) -> None:
    voting, locks, datasets, _ = make_voting(store)
    locks.down = True
    assert await vote(voting, store, "r1", "c1") == "queued"
    locks.down = False
    assert await vote(voting, store, "r2", "c2") == "merged"
    assert await PendingMerges(store).all() == []
    assert (await step_of(store, "r1"))["merge_commit"] == (await step_of(store, "r2"))["merge_commit"]


async def test_a_queued_merge_that_conflicts_marks_its_step(store: Store) -> None:
    voting, locks, datasets, _ = make_voting(store)
    voting.metrics = Metrics()
    locks.down = True
    assert await vote(voting, store, "r1", "c1") == "queued"
    locks.down = False
    datasets.repo.conflicts = ["a.txt"]
    assert await voting._retry(await PendingMerges(store).all()) is True
    step = await step_of(store, "r1")
    assert step["status"] == "conflict" and step["conflicts"] == ["a.txt"] and step["run_status"] == "failed"
    assert datasets.repo.merges == [] and await PendingMerges(store).all() == []
    # Its run had ended (succeeded, merge queued) before the conflict: counted here, once.
    assert voting.metrics.merge_conflicts._value.get() == 1


async def test_a_queued_merge_conflict_of_a_run_still_going_is_left_to_the_run(store: Store) -> None:
    voting, locks, datasets, _ = make_voting(store)
    voting.metrics = Metrics()
    records = RunRecords(store)
    await records.create("r1", PIPELINE, "manual", PIPELINE.graph(), ["s-me"])
    await records.change_run(RunChange("r1", RunStatus.RUNNING))
    # Its step is running (its merge is part of it): a pending step never votes, and the settle's
    # running -> conflict is a guarded transition.
    await records.change_step(StepChange("r1", "s", StepStatus.RUNNING))
    locks.down = True
    result = await voting.vote(("r1", "s"), DATASET, "s-me", "c1", "merge", {"MAO-Run": "r1"})
    assert result.state == "queued"
    locks.down = False
    datasets.repo.conflicts = ["a.txt"]
    assert await voting._retry(await PendingMerges(store).all()) is True
    # The run engine counts the conflict step when the run ends (Metrics.observe_run): not twice.
    assert voting.metrics.merge_conflicts._value.get() == 0
    assert (await step_of(store, "r1"))["status"] == "conflict"
