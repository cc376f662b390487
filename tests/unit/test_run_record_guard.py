"""A run's record never lies: the run engine in-process (a real SQLite store, the real Runner and
StepWork), with faults injected where the engine cannot foresee them: any record write failing once
(the database away, or a bug), any attempt raising anything. Whatever the fault, the run ends with
every step final, no attempt left running, a final run status naming the error, and a waiting caller
that returns (POST /pipeline/run's path) instead of raising."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config import load_settings
from orchestrator.domain.pipeline import Dataset, Pipeline, Tool
from orchestrator.domain.states import MergeState
from orchestrator.errors import DatabaseUnavailable
from orchestrator.runs.attempt import AttemptOutcome, StepFailed
from orchestrator.runs.engine import Runner
from orchestrator.store import Store
from orchestrator.store.run_changes import StepChange

FINAL_STEP = {"succeeded", "failed", "conflict", "skipped", "cancelled", "cached"}
RECORD_WRITES = ("change_run", "change_step", "note_step", "start_attempt", "end_attempt", "close")
# a -> b, and c on its own: a failure of a skips b, c still runs.
STEPS = [
    {"name": "a", "tool": "t", "output_dataset": "d", "needs": []},
    {"name": "b", "tool": "t", "output_dataset": "d", "needs": ["a"]},
    {"name": "c", "tool": "t", "output_dataset": "d2", "needs": []},
]


class Registrations:
    async def dataset(self, name: str) -> Dataset:
        return Dataset(name=name, master="/nowhere.git")

    async def tool(self, name: str) -> Tool:
        return Tool(name=name, image="busybox:latest")


class Pins:
    """Every registration is what the pipeline accepted (the pins' own tests are elsewhere)."""

    def __init__(self, registrations: Registrations) -> None:
        self.registrations = registrations

    async def dataset(self, scope: str, name: str) -> Dataset:
        return await self.registrations.dataset(name)

    async def tool(self, scope: str, name: str) -> Tool:
        return await self.registrations.tool(name)

    async def changes(self, pipeline: Pipeline) -> list[Any]:
        return []


class Faults:
    """The ``at``-th record write (counted over every wrapped method) raises ``error`` once."""

    def __init__(self, at: int | None, error: BaseException) -> None:
        self.at = at
        self.error = error
        self.calls = 0
        self.fired = False

    def wrap(self, method: Any) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at:
                self.fired = True
                raise self.error
            return await method(*args, **kwargs)

        return wrapped


# A context manager, not a generator iterated with ``async for``: a ``return`` inside the loop left the
# generator's cleanup to asyncio.run's shutdown, after it had cancelled the store's tasks, and an
# aiosqlite thread then answered a closed loop ("Event loop is closed", under load).
@asynccontextmanager
async def runner_for(tmp_path: Path) -> AsyncIterator[tuple[Runner, Store]]:
    env = {"MAO_EXECUTOR_TOKEN": "t", "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"}
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()

    async def nothing() -> None:
        return None

    await store.save_pipeline(Pipeline.model_validate({"name": "p", "steps": STEPS}), before_commit=nothing)
    runner = Runner(
        load_settings(env),
        store,
        Registrations(),
        object(),
        object(),
        object(),
        object(),  # type: ignore[arg-type]
        Pins(Registrations()),  # type: ignore[arg-type]
    )
    try:
        yield runner, store
    finally:
        await runner.shutdown()
        await store.close()


def attempt_that(fail_step: str | None, error: BaseException | None) -> Any:
    async def run(ctx: Any, attempt: int, tool: Tool, scratch: Path, voting: Any = None, **_: Any) -> AttemptOutcome:
        await asyncio.sleep(0)
        if ctx.step.name == fail_step and error is not None:
            raise error
        return AttemptOutcome(None, "c" * 40, True, "m" * 40, MergeState.MERGED, "sha256:" + "0" * 64, None)

    return run


async def run_once(
    tmp_path: Path, faults: Faults, fail_step: str | None = None, error: BaseException | None = None
) -> dict[str, Any]:
    async with runner_for(tmp_path) as (runner, store):
        for name in RECORD_WRITES:
            setattr(runner.records, name, faults.wrap(getattr(runner.records, name)))
        runner.attempts.run = attempt_that(fail_step, error)  # type: ignore[method-assign]
        run_id = await runner.start("p", "manual")
        waited = await asyncio.wait_for(runner.wait(run_id), 30)  # never raises for the run's sake
        record = await store.get_run(run_id)
        assert record is not None
        # What a waiting POST /pipeline/run answers with (no second read) is the record as stored.
        assert waited is None or waited == record
        return record.to_json()


def assert_closed(record: dict[str, Any], context: object = None) -> None:
    assert record["status"] in ("succeeded", "failed"), (context, record)
    assert record["ended_at"] is not None
    for step in record["steps"]:
        assert step["status"] in FINAL_STEP, step
        assert all(a["status"] != "running" for a in step["attempts"]), step
    if record["status"] == "failed":
        assert record["error"], record


ERRORS = [
    DatabaseUnavailable("the database did not answer while trying to write: database is locked"),
    RuntimeError("boom"),
    KeyError("missing"),
    RecursionError("maximum recursion depth exceeded"),
    OSError(28, "No space left on device"),
]
# A run of the three steps makes 8 record writes (the run's start; each step's start with its
# attempt, and its end with its attempt's; the close); a few more cover a retried close.
WRITES = 12


def test_any_record_write_failing_once_still_closes_the_run(tmp_path: Path) -> None:
    """Every write of a run, failing once with each kind of error (exhaustive: 90 runs on one store)."""

    async def scenario() -> list[tuple[int, str, dict[str, Any], bool]]:
        outcomes = []
        async with runner_for(tmp_path) as (runner, store):
            runner.attempts.run = attempt_that(None, None)  # type: ignore[method-assign]
            real = {name: getattr(runner.records, name) for name in RECORD_WRITES}
            for error in ERRORS:
                for at in range(1, WRITES + 1):
                    faults = Faults(at, error)
                    for name, method in real.items():
                        setattr(runner.records, name, faults.wrap(method))
                    run_id = await runner.start("p", "manual")
                    waited = await asyncio.wait_for(runner.wait(run_id), 30)  # never raises for the run's sake
                    record = await store.get_run(run_id)
                    assert record is not None
                    assert waited is None or waited == record, (at, error)  # the waiter's answer
                    assert waited is not None or faults.fired, (at, error)
                    outcomes.append((at, repr(error), record.to_json(), faults.fired))
        return outcomes

    for at, error, record, fired in asyncio.run(scenario()):
        assert_closed(record, (at, error))
        if not fired:
            assert record["status"] == "succeeded", (at, error, record)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fail_at=st.sets(st.integers(min_value=1, max_value=WRITES), max_size=4), error=st.sampled_from(ERRORS))
def test_several_record_writes_failing_still_close_the_run(
    tmp_path_factory: Any, fail_at: set[int], error: Exception
) -> None:
    """Several writes of one run failing (hypothesis picks which): the run still ends closed."""

    class Many(Faults):
        def wrap(self, method: Any) -> Any:
            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                if self.calls in fail_at:
                    self.fired = True
                    raise error
                return await method(*args, **kwargs)

            return wrapped

    record = asyncio.run(run_once(tmp_path_factory.mktemp("run"), Many(None, error)))
    assert_closed(record)


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (RuntimeError("boom"), "internal error: RuntimeError: boom"),
        (RecursionError("maximum recursion depth exceeded"), "internal error: RecursionError"),
        (OSError(28, "No space left on device"), "the disk is full"),
        (StepFailed("step a exited with code 3"), "step a exited with code 3"),
        (DatabaseUnavailable("the database did not answer"), "the database did not answer"),
    ],
)
def test_an_attempt_raising_anything_fails_its_step_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: BaseException, named: str
) -> None:
    caplog.set_level(logging.INFO)
    record = asyncio.run(run_once(tmp_path, Faults(None, error), fail_step="a", error=error))
    assert_closed(record)
    steps = {s["name"]: s for s in record["steps"]}
    assert record["status"] == "failed" and named in record["error"], record
    assert steps["a"]["status"] == "failed" and named in steps["a"]["error"]
    assert steps["b"]["status"] == "skipped" and steps["c"]["status"] == "succeeded"
    # No task of the run (named "run <id>" and "run <id> step <name>") died unretrieved; what other
    # tests' garbage may log meanwhile is not this run's.
    unretrieved = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not [m for m in unretrieved if "name='run " in m], unretrieved


def test_a_step_whose_end_cannot_be_recorded_is_closed_with_the_run(tmp_path: Path) -> None:
    """The database refuses every write of step a's end: the run's close writes it, in one go."""

    async def scenario() -> dict[str, Any]:
        async with runner_for(tmp_path) as (runner, store):
            runner.attempts.run = attempt_that(None, None)  # type: ignore[method-assign]
            real = runner.records.change_step

            async def change_step(change: StepChange, attempt: Any = None, real: Any = real) -> None:
                if change.step == "a" and change.facts.ended_at is not None:
                    raise DatabaseUnavailable("the disk is full: the database could not update step a")
                await real(change, attempt)

            runner.records.change_step = change_step  # type: ignore[method-assign]
            run_id = await runner.start("p", "manual")
            await runner.wait(run_id)
            record = await store.get_run(run_id)
            assert record is not None
            return record.to_json()

    record = asyncio.run(scenario())
    assert_closed(record)
    assert {s["name"]: s["status"] for s in record["steps"]} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
    }
    assert record["status"] == "succeeded"
    # Its attempt's end went with the step's end that failed: the close wrote it as it was.
    assert [t["status"] for t in record["steps"][0]["attempts"]] == ["succeeded"]
