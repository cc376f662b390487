"""The status writes outside the engine's step-by-step changes are guarded too (issue 19): an outage
merge's settling, a run's end (``RunRecords.close``) and a retry's plan (``plan_steps``). Generated
over every status of the tables: each write moves a record exactly as ``domain.states`` allows, and
otherwise leaves it untouched (a legitimate no-op) or raises ``IllegalTransition`` (a bug)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from sqlalchemy import update

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.states import (
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    AttemptStatus,
    IllegalTransition,
    MergeState,
    RunStatus,
    StepStatus,
)
from orchestrator.store import Store
from orchestrator.store.outage import PendingMerges
from orchestrator.store.run_changes import StepChange, StepFacts
from orchestrator.store.runs import RunEnd, RunRecords, StepEnd
from orchestrator.store.tables import RunRow, RunStepRow, utcnow

PIPELINE = Pipeline.model_validate(
    {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
)
ids = itertools.count()


@pytest.fixture
async def store(tmp_path: Path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    yield store
    await store.close()


async def a_run(store: Store, run: RunStatus, step: StepStatus) -> tuple[RunRecords, str]:
    """A run and its one step, their records forced into the given statuses."""
    records = RunRecords(store)
    run_id = f"r{next(ids)}"
    await records.create(run_id, PIPELINE, "manual", PIPELINE.graph(), ["s-me"])
    async with store.session("set statuses for the test") as s:
        await s.execute(update(RunRow).where(RunRow.id == run_id).values(status=run, error="before"))
        await s.execute(
            update(RunStepRow).where(RunStepRow.run_id == run_id).values(status=step, error="before")
        )
    return records, run_id


async def test_a_conflicting_settle_moves_only_what_the_tables_allow(store: Store) -> None:
    pending = PendingMerges(store)
    for run, step in itertools.product(RunStatus, StepStatus):
        records, run_id = await a_run(store, run, step)
        await pending.queue("d", f"b-{run_id}", "/m.git", "c1", "m", {}, (run_id, "s"))
        ended = await pending.settle("d", f"b-{run_id}", "c1", [[run_id, "s"]], None, ["a.txt"], "conflict!")
        record = await records.get(run_id)
        assert record is not None
        (got,) = record.steps
        case = f"run {run}, step {step}"
        assert ended == (run not in (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING)), case
        if StepStatus.CONFLICT in STEP_TRANSITIONS[step]:
            assert (got.status, got.error) == (StepStatus.CONFLICT, "conflict!"), case
        else:  # a final step keeps its status and error; its record still learns the merge's end
            assert (got.status, got.error) == (step, "before"), case
        assert got.merge == MergeState.CONFLICT and got.conflicts == ("a.txt",), case
        if RunStatus.FAILED in RUN_TRANSITIONS[run]:
            assert (record.status, record.error) == (RunStatus.FAILED, "conflict!"), case
        else:  # failed or cancelled already: final
            assert (record.status, record.error) == (run, "before"), case
        assert await pending.get("d", f"b-{run_id}") is None, case


async def test_a_clean_settle_changes_no_status(store: Store) -> None:
    pending = PendingMerges(store)
    for run, step in itertools.product(RunStatus, StepStatus):
        records, run_id = await a_run(store, run, step)
        await pending.queue("d", f"b-{run_id}", "/m.git", "c1", "m", {}, (run_id, "s"))
        await pending.settle("d", f"b-{run_id}", "c1", [[run_id, "s"]], "m1")
        record = await records.get(run_id)
        assert record is not None and record.status == run
        assert record.steps[0].status == step and record.steps[0].merge == MergeState.MERGED


async def test_a_runs_end_writes_a_step_end_only_from_an_open_status(store: Store) -> None:
    """``close``: a step record still pending or running gets its end when the table allows it (from
    pending also through running: its start was not recorded); a final record is left alone; any
    other write raises and writes nothing of the run's end."""
    for was, end in itertools.product(StepStatus, StepStatus):
        records, run_id = await a_run(store, RunStatus.RUNNING, was)
        close = records.close(
            run_id, RunEnd(RunStatus.FAILED, "end", utcnow()), {"s": StepEnd(end, {"error": "e"})},
            AttemptStatus.CANCELLED, "reason",
        )  # fmt: skip
        through_running = end in STEP_TRANSITIONS[StepStatus.RUNNING] and was is StepStatus.PENDING
        legal = end in STEP_TRANSITIONS[was] or through_running
        case = f"{was} -> {end}"
        if was not in (StepStatus.PENDING, StepStatus.RUNNING) or was == end or legal:
            await close
            expected = end if was in (StepStatus.PENDING, StepStatus.RUNNING) else was
            record = await records.get(run_id)
            assert record is not None and record.status == RunStatus.FAILED, case
            assert record.steps[0].status == expected, case
        else:
            with pytest.raises(IllegalTransition):
                await close
            record = await records.get(run_id)
            assert record is not None and (record.status, record.steps[0].status) == (RunStatus.RUNNING, was)


async def test_a_runs_end_lands_exactly_when_the_table_allows_it(store: Store) -> None:
    """``close``'s run status, every (held, end) pair: a run a queued merge's conflict failed
    meanwhile stays failed with that error; every other illegal end raises."""
    for held, end in itertools.product(RunStatus, RunStatus):
        records, run_id = await a_run(store, held, StepStatus.SUCCEEDED)
        close = records.close(run_id, RunEnd(end, "end", utcnow()), {}, AttemptStatus.CANCELLED, "reason")
        case = f"{held} -> {end}"
        if end in RUN_TRANSITIONS[held]:
            await close
            expected = (end, "end")
        elif held is RunStatus.FAILED:
            await close
            expected = (held, "before")
        else:
            with pytest.raises(IllegalTransition):
                await close
            expected = (held, "before")
        record = await records.get(run_id)
        assert record is not None and (record.status, record.error) == expected, case


async def test_a_retry_plan_reuses_a_step_only_while_it_is_pending(store: Store) -> None:
    for was in StepStatus:
        records, run_id = await a_run(store, RunStatus.PENDING, was)
        plan = records.plan_steps(run_id, {"s": StepEnd(StepStatus.REUSED, {"reason": "kept"})})
        if StepStatus.REUSED in STEP_TRANSITIONS[was]:
            await plan
            expected = StepStatus.REUSED
        else:
            with pytest.raises(IllegalTransition):
                await plan
            expected = was
        record = await records.get(run_id)
        assert record is not None and record.steps[0].status == expected, was
    records, run_id = await a_run(store, RunStatus.PENDING, StepStatus.SUCCEEDED)
    await records.plan_steps(run_id, {"s": "a reason only: no status written"})
    record = await records.get(run_id)
    assert record is not None and record.steps[0].status == StepStatus.SUCCEEDED


@pytest.mark.parametrize("writer", ["the step's own end", "the run's close"])
@pytest.mark.parametrize("settled_first", [True, False])
async def test_a_queued_merge_settled_beside_the_steps_end_stays_merged(
    store: Store, writer: str, settled_first: bool
) -> None:
    """The step's vote was queued (the federation away); the queued merge settles while the run
    writes the step's end with ``merge_state=queued``. In either order the record says merged, with
    the merge's commit: a write of ``queued`` never takes a settled merge back."""
    pending = PendingMerges(store)
    records, run_id = await a_run(store, RunStatus.RUNNING, StepStatus.RUNNING)
    await pending.queue("d", f"b-{run_id}", "/m.git", "c1", "m", {}, (run_id, "s"))
    fields = {"merge_state": MergeState.QUEUED, "merge_commit": None, "output_commit": "c1"}

    async def settle() -> None:
        await pending.settle("d", f"b-{run_id}", "c1", [[run_id, "s"]], "m1", [], None)

    async def end_step() -> None:
        if writer == "the run's close":
            ended = RunEnd(RunStatus.SUCCEEDED, None, utcnow())
            steps = {"s": StepEnd(StepStatus.SUCCEEDED, fields)}
            await records.close(run_id, ended, steps, AttemptStatus.FAILED, "ended")
        else:
            await records.change_step(StepChange(run_id, "s", StepStatus.SUCCEEDED, StepFacts(**fields)))

    for write in (settle, end_step) if settled_first else (end_step, settle):
        await write()
    record = await records.get(run_id)
    assert record is not None
    (got,) = record.steps
    assert (got.status, got.merge, got.merge_commit) == (StepStatus.SUCCEEDED, MergeState.MERGED, "m1")
