"""``POST /pipeline/run`` reads the pipeline's definition once: the API's read (for its checks) is
handed through the door to a run that starts at once, which takes it instead of reading it again,
only while it is still the stored one. An init or a delete of the pipeline that ran, or was under
way, anywhere between the API's read and the run's start makes the run read it again: whatever the
interleaving, the run takes exactly the definition (and version) it took when it read it itself,
and the API's check of the registrations stands for the run's only when the run takes the definition
the API checked (one read again is compared by the run itself)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.causes import CronTick, Manual, Retry, RunAsk
from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.versions import ReadDefinition, VersionedPipeline
from orchestrator.errors import NotFound
from orchestrator.runs.door import carried
from tests.unit.test_run_record_guard import attempt_that, runner_for

# The checkpoints a write's begin and end are placed at: before the API's read, between the read
# and the run's start, after the start (the write still under way when the run starts).
BEFORE_READ, BEFORE_START, AFTER_START = 0, 1, 2
NEW = Pipeline.model_validate({"name": "p", "steps": [{"name": "x", "tool": "t", "output_dataset": "d"}]})


async def nothing() -> None:
    return None


class Write:
    """An init (of ``NEW``) or a delete of pipeline p, held inside its transaction until released."""

    def __init__(self, store: Any, kind: str) -> None:
        self.store = store
        self.kind = kind
        self.inside = asyncio.Event()
        self.release = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None

    async def _held(self) -> None:
        self.inside.set()
        await self.release.wait()

    async def begin(self) -> None:
        if self.kind == "init":
            self.task = asyncio.create_task(self.store.save_pipeline(NEW, before_commit=self._held))
        else:
            self.task = asyncio.create_task(self.store.delete_pipeline("p", before_commit=self._held))
        await self.inside.wait()

    async def end(self) -> None:
        self.release.set()
        assert self.task is not None
        await self.task


WINDOWS = [(b, e) for b in (BEFORE_READ, BEFORE_START, AFTER_START) for e in (BEFORE_READ, BEFORE_START, AFTER_START) if b <= e]


# Every interleaving of one write with the read and the start (a small space: all of it, not a sample).
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("kind", ["init", "delete", None])
def test_the_run_takes_what_it_would_have_read(tmp_path: Path, kind: str | None, window: tuple[int, int]) -> None:
    begin, end = window
    untouched = kind is None or begin == AFTER_START or end == BEFORE_READ

    here = tmp_path / uuid.uuid4().hex[:8]  # a database of its own for each example
    here.mkdir()

    compared = 0

    async def scenario() -> tuple[Any, Any, int]:
        async with runner_for(here) as (runner, store):
            runner.attempts.run = attempt_that(None, None)  # type: ignore[method-assign]
            compare = runner.pins.changes

            async def counted_compare(pipeline: Pipeline) -> Any:
                nonlocal compared
                compared += 1
                return await compare(pipeline)

            runner.pins.changes = counted_compare  # type: ignore[method-assign]
            write = Write(store, kind) if kind else None

            async def at(checkpoint: int) -> None:
                if write is not None and begin == checkpoint:
                    await write.begin()
                if write is not None and end == checkpoint and checkpoint != AFTER_START:
                    await write.end()

            await at(BEFORE_READ)
            read = await runner.versions.read_current("p")  # the API's read (None: not initialised)
            await at(BEFORE_START)
            # What the run would have read itself, at its start (a write under way is not seen).
            expected = await runner.versions.for_run("p", None)
            reads = 0
            read_done = asyncio.Event()
            for_run = runner.versions.for_run

            async def counted(*args: Any) -> Any:
                nonlocal reads
                reads += 1
                try:
                    return await for_run(*args)
                finally:
                    read_done.set()

            runner.versions.for_run = counted  # type: ignore[method-assign]
            started = asyncio.create_task(runner.start("p", "manual", registrations_checked=True, definition=read))
            if write is not None and begin == AFTER_START:
                await asyncio.sleep(0)  # the start has reserved and chosen its definition
                await write.begin()
            if write is not None and end == AFTER_START:
                if not untouched:  # its own read is made while the write is still under way
                    await asyncio.wait_for(read_done.wait(), 30)
                await write.end()
            try:
                run_id = await started
            except NotFound:
                return expected, None, reads
            await asyncio.wait_for(runner.wait(run_id), 30)
            return expected, await store.get_run(run_id), reads

    expected, record, reads = asyncio.run(scenario())
    if expected is None:  # deleted before the start: the run is refused, as when it read it itself
        assert record is None
        return
    assert record is not None
    assert record.version == expected.version
    assert [s.name for s in record.steps] == [s.name for s in expected.pipeline.steps]
    assert reads == (0 if untouched else 1)  # read again only when a write came in between
    # The API's check of the registrations stands for the run's only for the definition it checked.
    assert compared == (0 if untouched else 1)


def test_a_carried_definition_is_not_read_again(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int | None, str]:
        async with runner_for(tmp_path) as (runner, store):
            runner.attempts.run = attempt_that(None, None)  # type: ignore[method-assign]
            read = await runner.versions.read_current("p")
            reads = 0
            for_run = runner.versions.for_run

            async def counted(*args: Any) -> Any:
                nonlocal reads
                reads += 1
                return await for_run(*args)

            runner.versions.for_run = counted  # type: ignore[method-assign]
            run_id = await runner.start("p", "manual", definition=read)
            await runner.wait(run_id)
            record = await store.get_run(run_id)
            assert record is not None
            return reads, record.version, record.status

    assert asyncio.run(scenario()) == (0, 1, "succeeded")


def test_a_version_run_reads_its_version(tmp_path: Path) -> None:
    """``Runner.start`` never takes a carried (current) definition for a ``version`` run."""

    async def scenario() -> list[str]:
        async with runner_for(tmp_path) as (runner, store):
            runner.attempts.run = attempt_that(None, None)  # type: ignore[method-assign]
            await store.save_pipeline(NEW, before_commit=nothing)  # version 2
            read = await runner.versions.read_current("p")
            run_id = await runner.start("p", "manual", version=1, definition=read)
            await runner.wait(run_id)
            record = await store.get_run(run_id)
            assert record is not None and record.version == 1
            return [s.name for s in record.steps]

    assert asyncio.run(scenario()) == ["a", "b", "c"]


READ = ReadDefinition(VersionedPipeline(NEW, 1), 0)


@pytest.mark.parametrize(
    ("cause", "overlap", "version", "expected"),
    [
        (Manual(True, READ), "skip", None, READ),
        (Manual(False, READ), "queue", None, READ),  # the record of a queued run; its start reads again
        (Manual(True, READ), "allow", None, READ),
        (Manual(True, READ), "replace", None, None),  # waits for the replaced run to stop
        (Manual(True, READ), "skip", 3, None),  # another version
        (Manual(True), "skip", None, None),
        (Retry("r"), "skip", None, None),
        (CronTick("s", None), "skip", None, None),  # type: ignore[arg-type]
    ],
)
def test_only_a_manual_runs_current_definition_is_carried(cause: Any, overlap: Any, version: Any, expected: Any) -> None:
    assert carried(RunAsk("p", cause, overlap, version=version), overlap) is expected


def test_a_carried_definition_keeps_its_private_values_out_of_the_asks_repr() -> None:
    step = {"name": "x", "tool": "t", "output_dataset": "d", "private_env": {"TOKEN": "s3cr3t-value"}}
    pipeline = Pipeline.model_validate({"name": "p", "steps": [step]})
    ask = RunAsk("p", Manual(True, ReadDefinition(VersionedPipeline(pipeline, 1), 3)))
    assert "s3cr3t-value" not in repr(ask) and "s3cr3t-value" not in str(ask)
    assert "stamp=3" in repr(ask)


def test_private_values_stay_out_of_every_repr_of_a_pipeline_and_its_steps() -> None:
    step = {"name": "x", "tool": "t", "output_dataset": "d", "private_env": {"TOKEN": "s3cr3t-value"}}
    pipeline = Pipeline.model_validate({"name": "p", "steps": [step]})
    versioned = VersionedPipeline(pipeline, 1)
    for value in (pipeline, pipeline.steps[0], versioned):
        assert "s3cr3t-value" not in repr(value) and "s3cr3t-value" not in str(value)
    assert pipeline.steps[0].private_env == {"TOKEN": "s3cr3t-value"}  # still there to be used
