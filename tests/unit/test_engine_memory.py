"""The run engine and its step work (runs/engine.py, runs/steps.py) with the real attempt and execution
against the in-memory backend (tests/unit/memory_backend.py), SQLite and no server: only the git side
of an attempt (snapshot, work folder, commit, vote) is a stand-in. The test ends each step's object as
it likes: success, a failure retried and then passing, retries used up (the step's dependants are
skipped), a cancel while a step runs, a cache hit on a second run with the same inputs, the fallback
tool, and a step that fails before any attempt (a registration that cannot be read, a missing pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load_settings
from orchestrator.domain.pipeline import Pipeline, Tool
from orchestrator.domain.states import MergeState
from orchestrator.errors import NotFound
from orchestrator.executors.backends import Backends
from orchestrator.executors.seam import ContainerSpec, End, EndKind, Handle
from orchestrator.runs.attempt import StepContext
from orchestrator.runs.engine import Runner
from orchestrator.store import Store
from tests.unit.engine_doubles import IMAGE, Pins, Registrations
from tests.unit.memory_backend import MemoryBackend

MERGED = "m" * 40


class Harness:
    """A runner whose attempts reach the memory backend; ``commits`` counts the stand-in commits."""

    def __init__(self, runner: Runner, backend: MemoryBackend, store: Store) -> None:
        self.runner = runner
        self.backend = backend
        self.store = store
        self.commits = 0
        self.submitted: list[tuple[str, int]] = []  # (step, attempt) in the order the backend got them
        submit = backend.submit

        async def noting(spec: ContainerSpec) -> Handle:
            self.submitted.append((spec.identity.step, spec.identity.attempt))
            return await submit(spec)

        backend.submit = noting  # type: ignore[method-assign]

    async def object_of(self, step: str, attempt: int = 1, timeout: float = 10.0) -> str:
        """The name of ``step``'s object for that attempt, once it was submitted."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for name in self.backend.submits:
                thing = self.backend.things.get(name)
                if thing is not None and (thing.spec.identity.step, thing.spec.identity.attempt) == (step, attempt):
                    return name
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"step {step} attempt {attempt} was never submitted: {self.backend.submits}")
            await asyncio.sleep(0.01)

    async def end(self, step: str, attempt: int = 1, exit_code: int = 0) -> None:
        name = await self.object_of(step, attempt)
        self.backend.start_it(name)
        self.backend.write(name, f"{step} attempt {attempt}\n".encode())
        kind = EndKind.COMPLETED if exit_code == 0 else EndKind.FAILED
        thing = self.backend.things[name]
        thing.end = End(kind=kind, exit_code=exit_code, node="memory-node", engine_id=f"id-{name}",
                        image_id=f"sha256:{IMAGE}")  # fmt: skip
        thing.poke()

    async def run(self, steps: list[dict[str, Any]], drive: Callable[[str], Awaitable[None]]) -> dict[str, Any]:
        async def nothing() -> None:
            return None

        await self.store.save_pipeline(Pipeline.model_validate({"name": "p", "steps": steps}), before_commit=nothing)
        run_id = await self.runner.start("p", "manual")
        driver = asyncio.create_task(drive(run_id))
        await asyncio.wait_for(self.runner.wait(run_id), 30)
        await asyncio.wait_for(driver, 10)
        record = await self.store.get_run(run_id)
        assert record is not None
        return record.to_json()  # the API's shape, which these tests read


def stand_in_git(harness: Harness, folder: Path) -> None:
    """The attempt's git side without git: an empty work folder, a commit per attempt, a merged vote."""
    attempts = harness.runner.attempts

    async def snapshot_input(ctx: StepContext, into: Path) -> tuple[Path | None, str | None]:
        return None, None

    async def prepare_output(ctx: StepContext, lane: str | None = None) -> tuple[Path, str]:
        work = folder / ctx.run_id / ctx.step.name
        work.mkdir(parents=True, exist_ok=True)
        return work, "p" * 40

    async def nothing(ctx: StepContext, lane: str | None = None) -> None:
        return None

    async def commit(ctx: StepContext, parent: str, trailers: Any, lane: str | None = None) -> tuple[str, bool]:
        harness.commits += 1
        return f"{harness.commits:040d}", True

    async def vote(ctx: StepContext, commit: str, trailers: Any) -> tuple[str | None, MergeState]:
        return MERGED, MergeState.MERGED

    attempts.snapshot_input = snapshot_input  # type: ignore[method-assign]
    attempts.prepare_output = prepare_output  # type: ignore[method-assign]
    attempts.reset_output = nothing  # type: ignore[method-assign]
    attempts.reclaim_output = nothing  # type: ignore[method-assign]
    attempts.commit = commit  # type: ignore[method-assign]
    attempts.vote = vote  # type: ignore[method-assign]


async def make(tmp_path: Path) -> Harness:
    env = {"MAO_EXECUTOR_TOKEN": "t", "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"}
    settings = load_settings(env)
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    backend = MemoryBackend(settings.default_backend)
    backends = Backends({backend.name: backend}, backend.name, {backend.name: "memory"})  # type: ignore[dict-item]
    # Datasets, voting and insights are never reached: the git side is a stand-in, no step reads input.
    runner = Runner(settings, store, Registrations(), object(), backends, object(), object(), Pins())  # type: ignore[arg-type]
    harness = Harness(runner, backend, store)
    stand_in_git(harness, tmp_path / "work")
    return harness


def scenario(tmp_path: Path, body: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        harness = await make(tmp_path)
        try:
            await body(harness)
        finally:
            await harness.runner.shutdown()
            await harness.store.close()

    asyncio.run(main())


A_THEN_B = [
    {"name": "a", "tool": "t", "output_dataset": "d", "needs": []},
    {"name": "b", "tool": "t", "output_dataset": "d", "needs": ["a"]},
]


async def no_work(run_id: str) -> None:
    """A run's driver when no object is to be ended: the engine decides without the backend."""
    return None


def steps_of(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record["steps"]}


def test_a_run_succeeds_step_after_step(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        async def drive(run_id: str) -> None:
            await h.end("a")
            await h.end("b")

        record = await h.run(
            A_THEN_B,
            drive,
        )
        assert record["status"] == "succeeded", record
        steps = steps_of(record)
        for name in ("a", "b"):
            assert steps[name]["status"] == "succeeded"
            assert steps[name]["merge_commit"] == MERGED
            assert [a["status"] for a in steps[name]["attempts"]] == ["succeeded"]
        # b's object was submitted only after a ended: the engine follows the graph.
        assert h.submitted == [("a", 1), ("b", 1)]

    scenario(tmp_path, body)


def test_a_failed_attempt_is_retried_and_the_step_passes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        async def drive(run_id: str) -> None:
            await h.end("a", attempt=1, exit_code=3)
            await h.end("a", attempt=2)

        record = await h.run(
            [{"name": "a", "tool": "t", "output_dataset": "d", "needs": [], "retries": 2, "retry_delay": 0.0}],
            drive,
        )
        assert record["status"] == "succeeded", record
        attempts = steps_of(record)["a"]["attempts"]
        assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "failed"), (2, "succeeded")]
        assert attempts[0]["exit_code"] == 3

    scenario(tmp_path, body)


def test_retries_used_up_fail_the_step_and_skip_what_needs_it(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        async def drive(run_id: str) -> None:
            await h.end("a", attempt=1, exit_code=1)
            await h.end("a", attempt=2, exit_code=1)
            await h.end("c")

        record = await h.run(
            [
                {"name": "a", "tool": "t", "output_dataset": "d", "needs": [], "retries": 1, "retry_delay": 0.0},
                {"name": "b", "tool": "t", "output_dataset": "d", "needs": ["a"]},
                {"name": "c", "tool": "t", "output_dataset": "d2", "needs": []},
            ],
            drive,
        )
        assert record["status"] == "failed", record
        steps = steps_of(record)
        assert steps["a"]["status"] == "failed" and "code 1" in steps["a"]["error"]
        assert [a["status"] for a in steps["a"]["attempts"]] == ["failed", "failed"]
        assert steps["b"]["status"] == "skipped" and steps["b"]["attempts"] == []
        assert steps["c"]["status"] == "succeeded"  # a step that does not need the failed one runs on
        assert sorted(h.submitted) == [("a", 1), ("a", 2), ("c", 1)]

    scenario(tmp_path, body)


def test_a_cancel_stops_the_running_step_and_removes_its_object(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        async def drive(run_id: str) -> None:
            name = await h.object_of("a")
            h.backend.start_it(name)
            await h.runner.cancel(run_id)

        record = await h.run(
            A_THEN_B,
            drive,
        )
        assert record["status"] == "cancelled", record
        steps = steps_of(record)
        assert steps["a"]["status"] == "cancelled"
        assert [a["status"] for a in steps["a"]["attempts"]] == ["cancelled"]
        assert steps["b"]["status"] in ("cancelled", "skipped")
        assert h.backend.cancels and not h.backend.things  # the object is gone from its backend

    scenario(tmp_path, body)


def test_a_second_run_with_the_same_inputs_is_a_cache_hit(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        cached = [{"name": "a", "tool": "t", "output_dataset": "d", "needs": [], "cache": True}]

        async def drive(run_id: str) -> None:
            await h.end("a")

        first = await h.run(cached, drive)
        assert first["status"] == "succeeded", first

        second = await h.run(cached, no_work)
        assert second["status"] == "succeeded", second
        step = steps_of(second)["a"]
        assert step["status"] == "cached" and step["attempts"] == []
        before = steps_of(first)["a"]
        assert (step["output_commit"], step["merge_commit"]) == (before["output_commit"], MERGED)
        assert h.submitted == [("a", 1)]  # nothing was submitted for the hit

    scenario(tmp_path, body)


@pytest.mark.parametrize("exit_code", [2, 137])
def test_a_step_without_retries_fails_at_its_first_failed_attempt(tmp_path: Path, exit_code: int) -> None:
    async def body(h: Harness) -> None:
        async def drive(run_id: str) -> None:
            await h.end("a", exit_code=exit_code)

        record = await h.run([{"name": "a", "tool": "t", "output_dataset": "d", "needs": []}], drive)
        assert record["status"] == "failed"
        step = steps_of(record)["a"]
        assert step["status"] == "failed" and [a["attempt"] for a in step["attempts"]] == [1]
        assert record["error"] and f"code {exit_code}" in record["error"]

    scenario(tmp_path, body)


def test_the_fallback_tool_runs_once_when_the_tool_failed(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        async def drive(run_id: str) -> None:
            await h.end("a", attempt=1, exit_code=1)
            await h.end("a", attempt=2)

        step = {"name": "a", "tool": "t", "fallback_tool": "t2", "output_dataset": "d", "needs": []}
        record = await h.run([step], drive)
        assert record["status"] == "succeeded", record
        attempts = steps_of(record)["a"]["attempts"]
        assert [(a["attempt"], a["tool"], a["status"]) for a in attempts] == [(1, "t", "failed"), (2, "t2", "succeeded")]

    scenario(tmp_path, body)


def test_a_step_whose_registration_cannot_be_read_fails_naming_it(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        async def missing(scope: str, name: str) -> Tool:
            raise NotFound(f"tool {name!r} is not registered")

        h.runner.pins.tool = missing  # type: ignore[method-assign]

        record = await h.run([{"name": "a", "tool": "gone", "output_dataset": "d", "needs": []}], no_work)
        assert record["status"] == "failed"
        assert steps_of(record)["a"]["error"] == "tool 'gone' is not registered"
        assert h.submitted == []

    scenario(tmp_path, body)


def test_a_step_in_a_pool_this_instance_lacks_fails_without_an_attempt(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        record = await h.run([{"name": "a", "tool": "t", "output_dataset": "d", "needs": [], "pool": "gpu"}], no_work)
        assert record["status"] == "failed"
        step = steps_of(record)["a"]
        assert "pool 'gpu' is not configured" in step["error"] and step["attempts"] == []

    scenario(tmp_path, body)
