"""A retry through the run engine with stand-in attempts and datasets (no server): the steps the
retried run got done are reused with its commits and no attempt, the rest runs, a step whose output
dataset moved runs again with its reason, and a queued retry keeps what it retries across a restart
(its row)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from orchestrator.config import load_settings
from orchestrator.domain.pipeline import Dataset, Pipeline, Tool
from orchestrator.domain.retry import Definition
from orchestrator.domain.states import MergeState, RunStatus
from orchestrator.runs.attempt import AttemptOutcome, StepFailed
from orchestrator.runs.engine import Runner
from orchestrator.runs.retry import request_retry
from orchestrator.store import Store
from orchestrator.store.runs import NewRun
from orchestrator.store.tables import utcnow

# a -> b, and c on its own (its own dataset).
STEPS = [
    {"name": "a", "tool": "t", "output_dataset": "d", "needs": []},
    {"name": "b", "tool": "t", "output_dataset": "d", "needs": ["a"]},
    {"name": "c", "tool": "t", "output_dataset": "d2", "needs": []},
]
MERGED = "m" * 40


class Registrations:
    async def dataset(self, name: str) -> Dataset:
        return Dataset(name=name, master="/nowhere.git")

    async def tool(self, name: str) -> Tool:
        return Tool(name=name, image="busybox:latest")


class Pins:
    def __init__(self) -> None:
        self.registrations = Registrations()

    async def dataset(self, scope: str, name: str) -> Dataset:
        return await self.registrations.dataset(name)

    async def tool(self, scope: str, name: str) -> Tool:
        return await self.registrations.tool(name)

    async def changes(self, pipeline: Pipeline) -> list[Any]:
        return []


class Datasets:
    """Ground-truth tips as the test sets them."""

    def __init__(self) -> None:
        self.tips: dict[str, str] = {}

    async def sync(self, name: str, master: str) -> str:
        return self.tips[name]


def test_a_retry_through_the_engine(tmp_path: Path) -> None:
    async def scenario() -> None:
        env = {"MAO_EXECUTOR_TOKEN": "t", "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"}
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await store.start()

        async def nothing() -> None:
            return None

        await store.save_pipeline(Pipeline.model_validate({"name": "p", "steps": STEPS}), before_commit=nothing)
        datasets = Datasets()
        runner = Runner(
            load_settings(env), store, Registrations(), datasets, object(), object(), object(), Pins(),  # type: ignore[arg-type]
        )  # fmt: skip
        ran: list[tuple[str, str]] = []
        failing = {"b"}

        async def attempt(ctx: Any, number: int, tool: Tool, scratch: Path, voting: Any = None, **_: Any) -> AttemptOutcome:
            ran.append((ctx.run_id, ctx.step.name))
            await asyncio.sleep(0)
            if ctx.step.name in failing:
                raise StepFailed(f"step {ctx.step.name} exited with code 1")
            return AttemptOutcome(None, "c" * 40, True, MERGED, MergeState.MERGED, "sha256:" + "0" * 64, None)

        runner.attempts.run = attempt  # type: ignore[method-assign]
        try:
            first = await runner.start("p", "manual")
            await runner.wait(first)
            old_view = await store.get_run(first)
            assert old_view is not None and old_view.status == "failed"
            old = old_view.to_json()

            failing.clear()
            datasets.tips = {"d": MERGED, "d2": "x" * 40}  # d2 moved since: c runs again
            started = await request_retry(runner, first, Definition.RECORDED)
            assert [(p.step, p.action.value) for p in started.plan] == [("a", "reuse"), ("b", "run"), ("c", "reuse")]
            await runner.wait(started.id)
            new_view = await store.get_run(started.id)
            assert new_view is not None
            assert (new_view.status, new_view.retry_of, new_view.trigger) == ("succeeded", first, "retry")
            new = new_view.to_json()
            steps = {s["name"]: s for s in new["steps"]}
            assert steps["a"]["status"] == "reused" and steps["a"]["attempts"] == []
            before = {s["name"]: s for s in old["steps"]}
            for key in ("merge_commit", "output_commit", "input_commit", "image_id", "merge"):
                assert steps["a"][key] == before["a"][key], key
            assert steps["a"]["merge_commit"] == MERGED
            assert steps["b"]["reason"] == f"failed in run {first}" and steps["b"]["status"] == "succeeded"
            assert steps["c"]["reason"].startswith(f"ground-truth of d2 moved since run {first}")
            assert sorted(step for run, step in ran if run == started.id) == ["b", "c"]

            # A retry waiting in the queue keeps what it retries in its row: a restart takes it up.
            pipeline = Pipeline.model_validate({"name": "p", "steps": STEPS})
            queued = NewRun("q" * 32, pipeline, "retry", pipeline.graph(), ["a-x", "b-x", "c-x"],
                            RunStatus.QUEUED, 0, utcnow(), version=1, retry_of=first)  # fmt: skip
            await runner.records.create_many([queued])
            (ticket,) = [t for t in await runner.records.queued() if t.run_id == queued.id]
            assert (ticket.retry_of, ticket.version) == (first, 1)
            assert [e["retry_of"] for e in runner.admission.listing()] == []
        finally:
            await runner.shutdown()
            await store.close()

    asyncio.run(scenario())
