"""Every status change of a run record is one guarded transition: any (old, new) pair of each kind,
written through the store, lands exactly when ``domain.states``' table allows it, and an illegal one
raises ``IllegalTransition`` and leaves the record as it was (never silently ignored)."""

from __future__ import annotations

import asyncio
import itertools
from enum import StrEnum
from pathlib import Path

import pytest
from sqlalchemy import update

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.states import (
    ATTEMPT_TRANSITIONS,
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    AttemptStatus,
    IllegalTransition,
    RunStatus,
    StepStatus,
)
from orchestrator.store import Store
from orchestrator.store.run_changes import AttemptEnded, NewAttempt, RunChange, StepChange, StepFacts
from orchestrator.store.runs import RunRecords
from orchestrator.store.tables import AttemptRow, RunRow, RunStepRow, utcnow

PIPELINE = Pipeline.model_validate(
    {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
)
ids = itertools.count()


async def fresh(store: Store) -> tuple[RunRecords, str, int]:
    records = RunRecords(store)
    run_id = f"r{next(ids)}"
    await records.create(run_id, PIPELINE, "manual", PIPELINE.graph(), ["s-me"])
    attempt = await records.start_attempt(
        NewAttempt(run_id, "s", 1, "t", "obj"), step_started=None, input_commit="i" * 40
    )
    return records, run_id, attempt


async def force(store: Store, row: type, status: str, *where: object) -> None:
    async with store.session("set a status for the test") as s:
        await s.execute(update(row).where(*where).values(status=status))


async def status_of(records: RunRecords, run_id: str) -> tuple[str, str, str]:
    record = await records.get(run_id)
    assert record is not None
    step = record.steps[0]
    return record.status, step.status, step.attempts[0].status


def test_a_status_change_lands_exactly_when_the_table_allows_it(tmp_path: Path) -> None:
    """Exhaustive: every (old, new) pair of every kind, each on a fresh run of one store."""

    async def one(store: Store, kind: str, was: StrEnum, to: StrEnum) -> None:
        records, run_id, attempt = await fresh(store)
        before = ("pending", "pending", "running")  # as fresh() leaves them
        if kind == "run":
            await force(store, RunRow, was, RunRow.id == run_id)
            allowed = to in RUN_TRANSITIONS[RunStatus(was)]
            write = records.change_run(RunChange(run_id, RunStatus(to), error="e"))
        elif kind == "step":
            await force(store, RunStepRow, was, RunStepRow.run_id == run_id)
            allowed = to in STEP_TRANSITIONS[StepStatus(was)]
            write = records.change_step(StepChange(run_id, "s", StepStatus(to), StepFacts(error="e")))
        else:
            await force(store, AttemptRow, was, AttemptRow.id == attempt)
            allowed = to in ATTEMPT_TRANSITIONS[AttemptStatus(was)]
            write = records.end_attempt(AttemptEnded(attempt, AttemptStatus(to), error="e"))
        index = ["run", "step", "attempt"].index(kind)
        expected = list(before)
        expected[index] = was
        if allowed:
            await write
            expected[index] = to
        else:
            with pytest.raises(IllegalTransition, match=f"{was} -> {to} is not allowed"):
                await write
        assert list(await status_of(records, run_id)) == expected, (kind, was, to)

    async def scenario() -> int:
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await store.start()
        cases = 0
        try:
            kinds: list[tuple[str, list[StrEnum]]] = [
                ("run", list(RunStatus)),
                ("step", list(StepStatus)),
                ("attempt", list(AttemptStatus)),
            ]
            for kind, statuses in kinds:
                for was, to in itertools.product(statuses, repeat=2):
                    await one(store, kind, was, to)
                    cases += 1
        finally:
            await store.close()
        return cases

    assert asyncio.run(scenario()) == 6 * 6 + 9 * 9 + 11 * 11


def test_a_step_success_and_its_attempt_end_are_one_transaction(tmp_path: Path) -> None:
    """The attempt's end goes with the step's: an illegal step change leaves the attempt running."""

    async def scenario() -> None:
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await store.start()
        try:
            records, run_id, attempt = await fresh(store)
            ended = AttemptEnded(attempt, AttemptStatus.SUCCEEDED, exit_code=0)
            with pytest.raises(IllegalTransition):  # pending -> succeeded: never
                await records.change_step(StepChange(run_id, "s", StepStatus.SUCCEEDED), ended)
            assert await status_of(records, run_id) == ("pending", "pending", "running")
            second = await records.start_attempt(
                NewAttempt(run_id, "s", 2, "t", "obj2"), step_started=utcnow(), input_commit="j" * 40
            )
            assert second != attempt
            await records.end_attempt(AttemptEnded(attempt, AttemptStatus.FAILED, error="x"))
            done = AttemptEnded(second, AttemptStatus.SUCCEEDED, exit_code=0)
            await records.change_step(StepChange(run_id, "s", StepStatus.SUCCEEDED), done)
            record = await records.get(run_id)
            assert record is not None
            step = record.steps[0]
            assert step.status == "succeeded" and step.input_commit == "j" * 40 and step.started_at
            assert [a.status for a in step.attempts] == ["failed", "succeeded"]
        finally:
            await store.close()

    asyncio.run(scenario())
