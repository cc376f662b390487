"""Frozen read models of a run record (run, steps, attempts): what ``store.runs`` reads return.

Callers inside the orchestrator read attributes; the API's JSON shape (``GET /runs``,
``GET /runs/{id}``) is built by ``to_json()`` alone, at the edge, so the shape lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain.states import AttemptStatus, RunStatus, StepStatus
from .tables import AttemptRow, RunRow, RunStepRow


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


@dataclass(frozen=True, kw_only=True)
class AttemptView:
    """One try of a step (one object on a backend; one per shard of a fan-out step)."""

    attempt: int
    tool: str
    image_id: str | None = None
    status: AttemptStatus
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    backend: str | None = None
    node: str | None = None
    queued_seconds: float | None = None
    shard: int | None = None
    speculative: bool = False

    @classmethod
    def of(cls, a: AttemptRow) -> AttemptView:
        return cls(
            attempt=a.attempt,
            tool=a.tool,
            image_id=a.image_id,
            status=AttemptStatus(a.status),
            exit_code=a.exit_code,
            started_at=a.started_at,
            ended_at=a.ended_at,
            error=a.error,
            backend=a.backend,
            node=a.node,
            queued_seconds=a.queued_seconds,
            shard=a.shard,
            speculative=bool(a.speculative),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "tool": self.tool,
            "image_id": self.image_id,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "error": self.error,
            "backend": self.backend,
            "node": self.node,
            "queued_seconds": self.queued_seconds,
            **({"shard": self.shard, "speculative": self.speculative} if self.shard is not None else {}),
        }


@dataclass(frozen=True, kw_only=True)
class StepView:
    """A step of a run as recorded; ``log_tail`` is None when the read left the log tails out."""

    position: int
    name: str
    needs: tuple[str, ...] = ()
    tool: str
    image: str | None = None
    status: StepStatus
    exit_code: int | None = None
    image_id: str | None = None
    input_dataset: str | None = None
    input_commit: str | None = None
    output_dataset: str
    branch: str
    output_commit: str | None = None
    merge_commit: str | None = None
    merge: str | None = None  # the ground-truth vote (domain.states.MergeState's values), None before one
    changed: bool | None = None
    conflicts: tuple[str, ...] = ()
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    insights: str | None = None
    reason: str | None = None
    attempts: tuple[AttemptView, ...] = ()
    shards: dict[str, Any] | None = None
    log_tail: str | None = None

    @property
    def duration(self) -> float | None:
        return _duration(self.started_at, self.ended_at)

    @classmethod
    def of(
        cls, st: RunStepRow, steps: Sequence[RunStepRow], attempts: Sequence[AttemptRow], with_logs: bool
    ) -> StepView:
        return cls(
            position=st.position,
            name=st.name,
            needs=tuple(st.needs if st.needs is not None else _legacy_needs(steps, st)),
            tool=st.tool,
            image=st.image,
            status=StepStatus(st.status),
            exit_code=st.exit_code,
            image_id=st.image_id,
            input_dataset=st.input_dataset,
            input_commit=st.input_commit,
            output_dataset=st.output_dataset,
            branch=st.branch,
            output_commit=st.output_commit,
            merge_commit=st.merge_commit,
            merge=st.merge_state,
            changed=st.changed,
            conflicts=tuple(st.conflicts or ()),
            started_at=st.started_at,
            ended_at=st.ended_at,
            error=st.error,
            insights=st.insights,
            reason=st.reason,
            attempts=tuple(AttemptView.of(a) for a in attempts),
            shards=st.shards,
            log_tail=(st.log_tail or "") if with_logs else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "name": self.name,
            "needs": list(self.needs),
            "tool": self.tool,
            "image": self.image,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "image_id": self.image_id,
            "input_dataset": self.input_dataset,
            "input_commit": self.input_commit,
            "output_dataset": self.output_dataset,
            "branch": self.branch,
            "output_commit": self.output_commit,
            "merge_commit": self.merge_commit,
            "merge": self.merge,
            "changed": self.changed,
            "conflicts": list(self.conflicts),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration": self.duration,
            "error": self.error,
            "insights": self.insights,
            **({"reason": self.reason} if self.reason else {}),
            "attempts": [a.to_json() for a in self.attempts],
            **({"shards": self.shards} if self.shards is not None else {}),
            **({"log_tail": self.log_tail} if self.log_tail is not None else {}),
        }


@dataclass(frozen=True, kw_only=True)
class RunView:
    """A run as recorded, with its steps in pipeline order and each step's attempts."""

    id: str
    pipeline: str
    trigger: str
    status: RunStatus
    error: str | None = None
    schedule_id: str | None = None
    priority: int = 0
    version: int | None = None
    backfill_id: str | None = None
    retry_of: str | None = None
    tick_at: datetime | None = None
    trigger_dataset: str | None = None
    trigger_commit: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    steps: tuple[StepView, ...] = ()

    @property
    def duration(self) -> float | None:
        return _duration(self.started_at, self.ended_at)

    def step(self, name: str) -> StepView | None:
        return next((s for s in self.steps if s.name == name), None)

    @classmethod
    def of(
        cls,
        run: RunRow,
        steps: Sequence[RunStepRow],
        attempts: Sequence[AttemptRow],
        with_logs: bool = True,
    ) -> RunView:
        by_step: dict[str, list[AttemptRow]] = {}
        for attempt in attempts:
            by_step.setdefault(attempt.step, []).append(attempt)
        return cls(
            id=run.id,
            pipeline=run.pipeline,
            trigger=run.trigger,
            status=RunStatus(run.status),
            error=run.error,
            schedule_id=run.schedule_id,
            priority=run.priority or 0,
            version=run.version,
            backfill_id=run.backfill_id,
            retry_of=run.retry_of,
            tick_at=run.tick_at,
            trigger_dataset=run.trigger_dataset,
            trigger_commit=run.trigger_commit,
            created_at=run.created_at,
            started_at=run.started_at,
            ended_at=run.ended_at,
            steps=tuple(StepView.of(st, steps, by_step.get(st.name, []), with_logs) for st in steps),
        )

    def to_json(self) -> dict[str, Any]:
        """The API's shape of the record (``GET /runs/{id}``; ``GET /runs`` without the log tails)."""
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "trigger": self.trigger,
            "status": self.status.value,
            "error": self.error,
            "schedule_id": self.schedule_id,
            "priority": self.priority,
            "version": self.version,
            **({"backfill_id": self.backfill_id} if self.backfill_id else {}),
            "retry_of": self.retry_of,
            "tick_at": _iso(self.tick_at),
            **(
                {"trigger_dataset": self.trigger_dataset, "trigger_commit": self.trigger_commit}
                if self.trigger_dataset
                else {}
            ),
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration": self.duration,
            "steps": [s.to_json() for s in self.steps],
        }


def _legacy_needs(steps: Sequence[RunStepRow], step: RunStepRow) -> list[str]:
    # Runs recorded before needs existed were straight lines.
    return [s.name for s in steps if s.position == step.position - 1]
