"""Run records: runs, their steps (by name) and each step's attempts.

The engine (``orchestrator.runs``) is the only writer; it says each change as a typed value
(``store/run_changes.py``), and every status change is one guarded transition: the statuses it may
come from (``domain.states``) are in the ``UPDATE``'s ``WHERE``, and a write that matches no row
raises ``IllegalTransition``. The reads are ``store/run_reads.py``'s (``RunRecords`` is a
``RunReads``); they return frozen read models (``store.run_views``), whose ``to_json()`` is the API's
shape (``GET /runs``, ``GET /runs/{id}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, delete, select, update
from sqlalchemy.orm import Session

from ..domain.graph import StepNode
from ..domain.pipeline import Pipeline
from ..domain.states import (
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    AttemptStatus,
    IllegalTransition,
    RunStatus,
    StepStatus,
)
from .backfills import NewBackfill
from .run_changes import (
    AttemptEnded,
    NewAttempt,
    RunChange,
    StepChange,
    StepFacts,
    ToolEnded,
    attempt_end,
    attempt_update,
    came_from,
    keep_settled_merge,
    run_transition,
    step_transition,
)
from .run_reads import CachedOutput, RunReads, UnfinishedAttempt, UnfinishedRun, UnfinishedStep, read_run
from .run_views import RunView
from .tables import AttemptRow, RunRow, RunStepRow, utcnow

# The read models, where the engine and its tests have always imported them from.
__all__ = [
    "CachedOutput",
    "NewRun",
    "RunEnd",
    "RunRecords",
    "StepEnd",
    "UnfinishedAttempt",
    "UnfinishedRun",
    "UnfinishedStep",
]


@dataclass(frozen=True)
class NewRun:
    """A run to record: ``cause`` holds the columns saying what it stands for (``tick_at``,
    ``trigger_dataset``, ``trigger_commit``); ``status`` is ``running`` (it starts now: recorded
    running at once, with its ``started_at``, one write instead of two), ``pending`` or
    ``queued``."""

    id: str
    pipeline: Pipeline
    trigger: str
    nodes: Sequence[StepNode]
    branches: Sequence[str]
    status: RunStatus
    priority: int
    created_at: datetime
    schedule_id: str | None = None
    cause: dict[str, Any] = field(default_factory=dict)
    side_by_side: bool = False  # overlap ``allow`` (runs/admission.py): kept for a restart
    # The pipeline version: the one it runs with (it starts now, or was asked for one), else None
    # (queued: it takes the version current when it starts, ``restart_steps``).
    version: int | None = None
    retry_of: str | None = None  # the run it retries (runs/retry.py)
    started_at: datetime | None = None  # recorded ``running``: when it started


def _add_steps(
    s: Session, run_id: str, pipeline: Pipeline, nodes: Sequence[StepNode], branches: Sequence[str]
) -> None:
    for position, (step, node, branch) in enumerate(zip(pipeline.steps, nodes, branches, strict=True)):
        s.add(
            RunStepRow(
                run_id=run_id,
                position=position,
                name=step.name,
                tool=step.tool,
                input_dataset=step.input_dataset,
                output_dataset=step.output_dataset,
                branch=branch,
                status=StepStatus.PENDING,
                needs=list(node.needs),
            )
        )


@dataclass(frozen=True)
class StepEnd:
    """A step's final status as the engine knows it, and the fields its record carries with it."""

    status: StepStatus
    fields: Mapping[str, Any] = field(default_factory=dict)


# A step record the run's end may still give its final status.
OPEN_STEP = frozenset({StepStatus.PENDING, StepStatus.RUNNING})


def _open_from(end: StepStatus) -> list[StepStatus]:
    """The open statuses a step's record may end ``end`` from at the run's end: those the tables
    allow, and ``pending`` too when ``running`` is one of them (the step's start was not
    recorded, the database away: pending -> running -> end, each change allowed)."""
    allowed = [old for old in came_from(STEP_TRANSITIONS, end) if old in OPEN_STEP]
    if StepStatus.RUNNING in allowed and StepStatus.PENDING not in allowed:
        allowed.append(StepStatus.PENDING)
    return sorted(allowed)


def _end_step(s: Session, run_id: str, name: str, end: StepEnd, allowed: Sequence[StepStatus]) -> None:
    """One guarded step transition: ``allowed`` in the ``WHERE``; ``IllegalTransition`` when the
    record is in none of them."""
    result = s.execute(
        update(RunStepRow)
        .where(RunStepRow.run_id == run_id, RunStepRow.name == name, RunStepRow.status.in_(allowed))
        .values(**keep_settled_merge({**end.fields, "status": end.status}))
    )
    if not getattr(result, "rowcount", 0):
        now = s.scalar(select(RunStepRow.status).where(RunStepRow.run_id == run_id, RunStepRow.name == name))
        raise IllegalTransition(f"run {run_id}: step {name}: {now or 'no record'} -> {end.status} is not allowed")


def _statement(statement: Executable) -> Callable[[Session], None]:
    """A transaction of one statement."""

    def execute(s: Session) -> None:
        s.execute(statement)

    return execute


@dataclass(frozen=True)
class RunEnd:
    """A run's final status and what its record carries with it: both written, None too (a run
    that succeeded has no error)."""

    status: RunStatus
    error: str | None
    ended_at: datetime


class RunRecords(RunReads):
    """The writes of run records (the engine's), with the reads (``RunReads``) beside them."""

    async def create(
        self,
        run_id: str,
        pipeline: Pipeline,
        trigger: str,
        nodes: Sequence[StepNode],
        branches: Sequence[str],
        schedule_id: str | None = None,
        **cause: Any,
    ) -> None:
        """Record one ``pending`` run of priority 0 (see ``create_many``)."""
        run = NewRun(
            run_id, pipeline, trigger, nodes, branches, RunStatus.PENDING, 0, utcnow(), schedule_id, cause
        )
        await self.create_many([run])

    async def create_many(self, runs: Sequence[NewRun], backfill: NewBackfill | None = None) -> None:
        """Record runs (with their steps, all pending) in one transaction: all or none; with the
        ``backfill`` they are the ticks of (its row first, the runs naming it in their cause)."""

        def record(s: Session) -> None:
            if backfill is not None:
                s.add(backfill.row())
                s.flush()
            for run in runs:
                s.add(
                    RunRow(
                        id=run.id,
                        pipeline=run.pipeline.name,
                        trigger=run.trigger,
                        status=run.status,
                        schedule_id=run.schedule_id,
                        priority=run.priority,
                        side_by_side=run.side_by_side or None,
                        version=run.version,
                        retry_of=run.retry_of,
                        created_at=run.created_at,
                        started_at=run.started_at,
                        **run.cause,
                    )
                )
            s.flush()
            for run in runs:
                _add_steps(s, run.id, run.pipeline, run.nodes, run.branches)

        await self.store.write(f"record {len(runs)} run(s)", record)

    async def restart_steps(
        self,
        run_id: str,
        pipeline: Pipeline,
        nodes: Sequence[StepNode],
        branches: Sequence[str],
        version: int | None = None,
    ) -> None:
        """A queued run's steps as the pipeline is now (it may have been initialised again while the
        run waited), or as the version it asked for: the pending step rows are written again, and
        the run's ``version`` with them."""

        def restart(s: Session) -> None:
            s.execute(update(RunRow).where(RunRow.id == run_id).values(version=version))
            s.execute(delete(RunStepRow).where(RunStepRow.run_id == run_id))
            s.flush()
            _add_steps(s, run_id, pipeline, nodes, branches)

        await self.store.write(f"record the steps of queued run {run_id}", restart)

    async def cancel_queued(self, run_id: str, reason: str) -> bool:
        """End a run that is still queued ``cancelled`` (its steps too); False if it is not queued."""

        def cancel(s: Session) -> bool:
            result = s.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == RunStatus.QUEUED)
                .values(status=RunStatus.CANCELLED, error=reason, ended_at=utcnow())
            )
            if not getattr(result, "rowcount", 0):
                return False
            s.execute(
                update(RunStepRow)
                .where(RunStepRow.run_id == run_id, RunStepRow.status == StepStatus.PENDING)
                .values(status=StepStatus.CANCELLED, error=reason)
            )
            return True

        return await self.store.write(f"cancel queued run {run_id}", cancel)

    async def change_run(self, change: RunChange) -> None:
        """The run's new status (one guarded transition: ``IllegalTransition`` when its record is
        not in a status it may come from)."""
        await self.store.write(f"record run {change.run_id} {change.status}", lambda s: run_transition(s, change))

    async def close(
        self,
        run_id: str,
        run_end: RunEnd,
        steps: Mapping[str, StepEnd],
        attempts: AttemptStatus,
        reason: str,
        ended: Sequence[AttemptEnded] = (),
    ) -> RunView | None:
        """The end of a run, in one transaction (all of it or nothing): the attempt ends not yet
        recorded (``ended``: a step's success whose own write failed) first; each step whose record is
        still pending or running gets its final status with its fields (its own write failed, or
        never came);
        attempts still ``running`` end ``attempts`` with ``reason``; the run ends as ``run_end``
        says. Each status change is guarded (the statuses it may come from in the ``WHERE``,
        ``IllegalTransition`` otherwise), except a run a queued merge's conflict failed meanwhile:
        it stays failed with that error. Returns the ended record as read in the same transaction
        (for the metrics and a waiting caller: no second transaction to read it)."""

        def close(s: Session) -> RunView | None:
            for attempt in ended:  # still running ones only: an attempt's end is final
                s.execute(attempt_update(attempt))
            recorded = s.execute(
                select(RunStepRow.name, RunStepRow.status).where(RunStepRow.run_id == run_id)
            ).all()
            for name, now in recorded:
                end = steps.get(name)
                # Only a record still open: a final one is either this one already, or a queued
                # merge's settling (succeeded -> conflict), which the run must not undo.
                if end is not None and now in OPEN_STEP and now != end.status:
                    _end_step(s, run_id, name, end, _open_from(end.status))
            s.execute(
                update(AttemptRow)
                .where(AttemptRow.run_id == run_id, AttemptRow.status == AttemptStatus.RUNNING)
                .values(status=attempts, error=reason[:4000], ended_at=utcnow())
            )
            result = s.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status.in_(came_from(RUN_TRANSITIONS, run_end.status)))
                .values(status=run_end.status, error=run_end.error, ended_at=run_end.ended_at)
            )
            if not getattr(result, "rowcount", 0):
                held = s.scalar(select(RunRow.status).where(RunRow.id == run_id))
                # A queued merge that conflicted meanwhile has already failed the run (outage
                # settling): its end stands, a legitimate no-op. Anything else is a bug.
                if held != RunStatus.FAILED:
                    raise IllegalTransition(
                        f"run {run_id}: {held or 'no record'} -> {run_end.status} is not allowed"
                    )
            return read_run(s, run_id)

        return await self.store.write(f"record the end of run {run_id}", close)

    async def plan_steps(self, run_id: str, steps: Mapping[str, StepEnd | str]) -> None:
        """A retry's plan, in one transaction: a step given a ``StepEnd`` ends so (``reused``, with
        the retried run's commits: a guarded transition, ``IllegalTransition`` unless the step is
        still pending), one given a text only gets it as its ``reason``."""

        def plan(s: Session) -> None:
            for name, planned in steps.items():
                if isinstance(planned, str):
                    s.execute(
                        update(RunStepRow)
                        .where(RunStepRow.run_id == run_id, RunStepRow.name == name)
                        .values(reason=planned)
                    )
                else:
                    _end_step(s, run_id, name, planned, came_from(STEP_TRANSITIONS, planned.status))

        await self.store.write(f"record the retry plan of run {run_id}", plan)

    async def note_step(self, run_id: str, step: str, facts: StepFacts | ToolEnded) -> None:
        """What the step's record learnt on its way (no status change)."""
        values = facts.values()
        if not values:
            return
        noted = update(RunStepRow).where(RunStepRow.run_id == run_id, RunStepRow.name == step).values(**values)
        await self.store.write(f"update step {step} of run {run_id}", _statement(noted))

    async def change_step(self, change: StepChange, attempt: AttemptEnded | None = None) -> None:
        """The step's new status (one guarded transition), and with it, in the same transaction,
        the end of its last attempt when that is still to be recorded (a step's success and its
        attempt's are one write)."""

        def step_change(s: Session) -> None:
            if attempt is not None:
                attempt_end(s, attempt)
            step_transition(s, change)

        await self.store.write(f"record step {change.step} of run {change.run_id} {change.status}", step_change)

    async def start_attempt(
        self, attempt: NewAttempt, *, step_started: datetime | None = None, input_commit: str | None = None
    ) -> int:
        """Record a started attempt (its object's name on its backend first, so that a restart
        finds it), in one transaction with the step's start (``step_started``: the step was
        pending and runs from now) and the input commit its attempt took; returns its id for
        ``end_attempt``."""
        facts = StepFacts(started_at=step_started, input_commit=input_commit)

        def start(s: Session) -> int:
            if step_started is not None:
                step_transition(s, StepChange(attempt.run_id, attempt.step, StepStatus.RUNNING, facts))
            elif values := facts.values():
                s.execute(
                    update(RunStepRow)
                    .where(RunStepRow.run_id == attempt.run_id, RunStepRow.name == attempt.step)
                    .values(**values)
                )
            row = AttemptRow(
                run_id=attempt.run_id,
                step=attempt.step,
                attempt=attempt.attempt,
                shard=attempt.shard,
                speculative=attempt.speculative,
                tool=attempt.tool,
                container=attempt.container,
                backend=attempt.backend,
                status=AttemptStatus.RUNNING,
                started_at=utcnow(),
            )
            s.add(row)
            s.flush()
            return row.id

        return await self.store.write(f"record attempt {attempt.attempt} of step {attempt.step}", start)

    async def end_attempt(self, end: AttemptEnded) -> None:
        """Record how an attempt ended (one guarded transition: only a running attempt ends)."""
        await self.store.write("record the end of an attempt", lambda s: attempt_end(s, end))

    async def end_unfinished_attempts(
        self, run_id: str, status: AttemptStatus, error: str | None, step: str | None = None
    ) -> None:
        """End the run's attempts still recorded running (of ``step`` only, when given)."""
        query = update(AttemptRow).where(AttemptRow.run_id == run_id, AttemptRow.status == AttemptStatus.RUNNING)
        if step is not None:
            query = query.where(AttemptRow.step == step)
        ended = query.values(status=status, error=error, ended_at=utcnow())
        await self.store.write(f"close the attempts of run {run_id}", _statement(ended))
