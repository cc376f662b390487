"""Typed changes of run records, and the one guarded transition each status change goes through.

The engine says what happened as a frozen value (``RunChange``, ``StepChange``, ``AttemptEnded``,
``NewAttempt``; ``StepFacts`` for what a step's record learns besides its status) instead of column
keywords. A status change is one ``UPDATE`` whose ``WHERE`` names the statuses the new one may come
from (``domain.states``' tables): a write that matches no row is an illegal transition and raises
``IllegalTransition``, never a silent no-op and never a status the record could not have reached.
``RunRecords`` (``store/runs.py``) runs them inside its transactions (synchronous: ``Store.write``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Update, case, select, update
from sqlalchemy.orm import Session

from ..domain.states import (
    ATTEMPT_TRANSITIONS,
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    AttemptStatus,
    IllegalTransition,
    MergeState,
    RunStatus,
    StepStatus,
)
from .tables import AttemptRow, RunRow, RunStepRow, utcnow

S = TypeVar("S", bound=StrEnum)


def came_from(table: dict[S, frozenset[S]], new: S) -> list[S]:
    """The statuses ``new`` may follow (sorted: one SQL text per status, cached by the driver)."""
    return sorted(old for old, nexts in table.items() if new in nexts)


@dataclass(frozen=True)
class StepFacts:
    """What a step's record learns besides its status; a field left None is not written (the
    column keeps what it holds)."""

    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    image: str | None = None
    image_id: str | None = None
    exit_code: int | None = None
    log_tail: str | None = None
    input_commit: str | None = None
    output_commit: str | None = None
    changed: bool | None = None
    conflicts: list[str] | None = None
    merge_state: MergeState | None = None
    merge_commit: str | None = None
    insights: str | None = None
    cache_key: str | None = None
    shards: dict[str, int] | None = None
    reason: str | None = None

    def values(self) -> dict[str, object]:
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}


@dataclass(frozen=True)
class ToolEnded:
    """What a step's record learns when its tool's object ended: all four written, None too (a
    retried attempt's end replaces the one before, whatever it says)."""

    image: str
    exit_code: int | None
    image_id: str | None
    log_tail: str

    def values(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class StepChange:
    """A step's new status, and what its record learns with it."""

    run_id: str
    step: str
    status: StepStatus
    facts: StepFacts = StepFacts()


@dataclass(frozen=True)
class RunChange:
    """A run's new status, and the fields that go with it."""

    run_id: str
    status: RunStatus
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class NewAttempt:
    """An attempt about to submit its object (``container``: the object's name on ``backend``)."""

    run_id: str
    step: str
    attempt: int
    tool: str
    container: str | None
    backend: str | None = None
    shard: int | None = None
    speculative: bool = False


@dataclass(frozen=True)
class AttemptEnded:
    """How an attempt ended, and (when its object told) where it ran."""

    attempt_id: int
    status: AttemptStatus
    exit_code: int | None = None
    image_id: str | None = None
    error: str | None = None
    engine_id: str | None = None
    node: str | None = None
    queued_seconds: float | None = None


def run_transition(s: Session, change: RunChange) -> None:
    values = {k: v for k, v in (("started_at", change.started_at), ("ended_at", change.ended_at),
                                ("error", change.error)) if v is not None}  # fmt: skip
    result = s.execute(
        update(RunRow)
        .where(RunRow.id == change.run_id, RunRow.status.in_(came_from(RUN_TRANSITIONS, change.status)))
        .values(**values, status=change.status)
    )
    if not getattr(result, "rowcount", 0):
        now = s.scalar(select(RunRow.status).where(RunRow.id == change.run_id))
        raise IllegalTransition(
            f"run {change.run_id}: {now or 'no record'} -> {change.status} is not allowed"
        )


def keep_settled_merge(values: dict[str, Any]) -> dict[str, Any]:
    """A step write's values that leave a merge already settled as it is: a step whose vote was
    queued is written ``queued`` by its run (its end, the run's close) while the queued merge may
    settle beside it (``store/outage.py`` writes ``merged`` and the commit). Whichever commits
    first, the record ends ``merged``; a write of ``queued`` never takes it back."""
    if values.get("merge_state") != MergeState.QUEUED:
        return values
    settled = RunStepRow.merge_state == MergeState.MERGED
    return {
        **values,
        "merge_state": case((settled, RunStepRow.merge_state), else_=values["merge_state"]),
        "merge_commit": case((settled, RunStepRow.merge_commit), else_=values.get("merge_commit")),
    }


def step_transition(s: Session, change: StepChange) -> None:
    result = s.execute(
        update(RunStepRow)
        .where(
            RunStepRow.run_id == change.run_id,
            RunStepRow.name == change.step,
            RunStepRow.status.in_(came_from(STEP_TRANSITIONS, change.status)),
        )
        .values(**keep_settled_merge(change.facts.values()), status=change.status)
    )
    if not getattr(result, "rowcount", 0):
        now = s.scalar(
            select(RunStepRow.status).where(
                RunStepRow.run_id == change.run_id, RunStepRow.name == change.step
            )
        )
        raise IllegalTransition(
            f"run {change.run_id}: step {change.step}: {now or 'no record'} -> {change.status} is not allowed"
        )


def attempt_update(end: AttemptEnded) -> Update:
    """The attempt's end, applied only while it may still end so (it is running)."""
    where = {"engine_id": end.engine_id, "node": end.node, "queued_seconds": end.queued_seconds}
    return (
        update(AttemptRow)
        .where(
            AttemptRow.id == end.attempt_id, AttemptRow.status.in_(came_from(ATTEMPT_TRANSITIONS, end.status))
        )
        .values(
            status=end.status,
            exit_code=end.exit_code,
            image_id=end.image_id,
            error=end.error[:4000] if end.error else None,
            ended_at=utcnow(),
            **{k: v for k, v in where.items() if v is not None},
        )
    )


def attempt_end(s: Session, end: AttemptEnded) -> None:
    result = s.execute(attempt_update(end))
    if not getattr(result, "rowcount", 0):
        now = s.scalar(select(AttemptRow.status).where(AttemptRow.id == end.attempt_id))
        raise IllegalTransition(
            f"attempt {end.attempt_id}: {now or 'no record'} -> {end.status} is not allowed"
        )
