"""Reads of run records: the queue of waiting runs, a step's cached output, the runs a previous
process left unfinished, and one run or a list of them as frozen read models (``store.run_views``).

``RunRecords`` (``store/runs.py``, the writes) is a ``RunReads``: the engine holds one object for
both; the API and the federation scheduler read through ``Store.get_run``/``Store.list_runs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain.queue import Ticket, in_order
from ..domain.states import AttemptStatus, RunStatus, StepStatus
from . import Store
from .run_views import RunView
from .tables import AttemptRow, RunRow, RunStepRow


@dataclass(frozen=True)
class CachedOutput:
    """What the last successful attempt of a step with the same memo key left."""

    run_id: str
    output_commit: str | None
    merge_commit: str | None
    image_id: str | None
    input_commit: str | None


@dataclass(frozen=True)
class UnfinishedAttempt:
    """An attempt of a run a previous process left: its handle (``backend``, ``container``: the
    object's name, ``engine_id``), for adopting its object."""

    id: int
    attempt: int
    shard: int | None
    tool: str
    status: AttemptStatus
    container: str | None
    backend: str | None
    engine_id: str | None


@dataclass(frozen=True)
class UnfinishedStep:
    name: str
    status: StepStatus
    output_dataset: str
    branch: str
    input_commit: str | None = None
    attempts: list[UnfinishedAttempt] = field(default_factory=list)

    @property
    def containers(self) -> list[str]:
        return [a.container for a in self.attempts if a.container]


@dataclass(frozen=True)
class UnfinishedRun:
    id: str
    pipeline: str
    status: RunStatus
    steps: list[UnfinishedStep]
    priority: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    side_by_side: bool = False


class RunReads:
    """The reads of run records (no writes: those are ``RunRecords``'s)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def queued(self) -> list[Ticket]:
        """The runs waiting in the queue (status ``queued``), as admission orders them."""
        async with self.store.reading("list queued runs") as s:
            rows = (await s.scalars(select(RunRow).where(RunRow.status == RunStatus.QUEUED))).all()
            return in_order(
                Ticket(
                    r.id, r.pipeline, r.trigger, r.priority or 0, r.created_at, r.tick_at, r.schedule_id,
                    side_by_side=bool(r.side_by_side), version=r.version, retry_of=r.retry_of,
                )  # fmt: skip
                for r in rows
            )

    async def cached_output(self, pipeline: str, step: str, key: str) -> CachedOutput | None:
        """The newest succeeded (or cached) record of ``step`` of ``pipeline`` with memo key ``key``."""
        async with self.store.reading(f"look up the cache of step {step}") as s:
            row = (
                await s.execute(
                    select(RunStepRow)
                    .join(RunRow, RunRow.id == RunStepRow.run_id)
                    .where(
                        RunRow.pipeline == pipeline,
                        RunStepRow.name == step,
                        RunStepRow.cache_key == key,
                        RunStepRow.status.in_((StepStatus.SUCCEEDED, StepStatus.CACHED)),
                    )
                    .order_by(RunRow.created_at.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            return CachedOutput(
                row.run_id, row.output_commit, row.merge_commit, row.image_id, row.input_commit
            )

    async def unfinished(self) -> list[UnfinishedRun]:
        """Runs a previous process left pending or running, with their steps' containers. Queued runs
        are not among them: they wait for their turn again (``queued``)."""
        async with self.store.reading("list unfinished runs") as s:
            started = [str(RunStatus.PENDING), str(RunStatus.RUNNING)]
            runs = (await s.scalars(select(RunRow).where(RunRow.status.in_(started)))).all()
            result = []
            for run in runs:
                steps = (
                    await s.scalars(
                        select(RunStepRow).where(RunStepRow.run_id == run.id).order_by(RunStepRow.position)
                    )
                ).all()
                attempts = (await s.scalars(select(AttemptRow).where(AttemptRow.run_id == run.id))).all()
                result.append(
                    UnfinishedRun(
                        run.id,
                        run.pipeline,
                        RunStatus(run.status),
                        [
                            UnfinishedStep(
                                st.name,
                                StepStatus(st.status),
                                st.output_dataset,
                                st.branch,
                                st.input_commit,
                                [
                                    UnfinishedAttempt(
                                        a.id, a.attempt, a.shard, a.tool, AttemptStatus(a.status),
                                        a.container, a.backend, a.engine_id,
                                    )  # fmt: skip
                                    for a in sorted(attempts, key=lambda a: a.id)
                                    if a.step == st.name
                                ],
                            )
                            for st in steps
                        ],
                        run.priority or 0,
                        run.created_at,
                        run.started_at,
                        bool(run.side_by_side),
                    )
                )
            return result

    async def get(self, run_id: str) -> RunView | None:
        return await self.store.read(f"read run {run_id}", lambda s: read_run(s, run_id))

    async def list(
        self,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 50,
        trigger: str | None = None,
    ) -> list[RunView]:
        async with self.store.reading("list runs") as s:
            query = select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id).limit(limit)
            if pipeline:
                query = query.where(RunRow.pipeline == pipeline)
            if status:
                query = query.where(RunRow.status == status)
            if trigger:
                query = query.where(RunRow.trigger == trigger)
            runs = (await s.scalars(query)).all()
            ids = [r.id for r in runs]
            steps = (
                await s.scalars(
                    select(RunStepRow)
                    .where(RunStepRow.run_id.in_(ids))
                    .order_by(RunStepRow.run_id, RunStepRow.position)
                )
            ).all()
            attempts = (
                await s.scalars(select(AttemptRow).where(AttemptRow.run_id.in_(ids)).order_by(AttemptRow.id))
            ).all()
            by_run: dict[str, list[RunStepRow]] = {}
            for step in steps:
                by_run.setdefault(step.run_id, []).append(step)
            tries: dict[str, list[AttemptRow]] = {}
            for attempt in attempts:
                tries.setdefault(attempt.run_id, []).append(attempt)
            return [RunView.of(r, by_run.get(r.id, []), tries.get(r.id, []), with_logs=False) for r in runs]


def read_run(s: Session, run_id: str) -> RunView | None:
    """One run's record (its steps and attempts) as read in the transaction ``s``: a read
    transaction (``RunReads.get``), or the write that ended it (``RunRecords.close``). Two
    statements: the run with its steps (joined: a run's columns are few), then its attempts (not
    joined: a fan-out step's hundreds would each repeat the step's columns, its log tail too)."""
    rows = s.execute(
        select(RunRow, RunStepRow)
        .outerjoin(RunStepRow, RunStepRow.run_id == RunRow.id)
        .where(RunRow.id == run_id)
        .order_by(RunStepRow.position)
    ).all()
    if not rows:
        return None
    run = rows[0][0]
    steps = [step for _, step in rows if step is not None]
    attempts = s.scalars(select(AttemptRow).where(AttemptRow.run_id == run_id).order_by(AttemptRow.id)).all()
    return RunView.of(run, steps, attempts)
