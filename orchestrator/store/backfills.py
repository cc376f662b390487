"""Backfills in the database: the ``backfills`` row (what was asked, whether it was cancelled) and the
runs that are its ticks (``runs.backfill_id``), whose states make its progress.

The row is written with its runs in one transaction (``RunRecords.create_many``), so a backfill
never exists without its runs nor a run without its backfill; both are rows, so a restart finds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, exists, func, select, update

from ..domain.states import BackfillStatus, RunStatus, StepStatus
from .tables import BackfillRow, RunRow, RunStepRow, utcnow

if TYPE_CHECKING:
    from . import Store

class Bucket(StrEnum):
    """A counter of a backfill's progress (``GET /backfills``' ``progress`` fields)."""

    DONE = "done"  # a run that succeeded
    FAILED = RunStatus.FAILED.value
    CANCELLED = RunStatus.CANCELLED.value
    QUEUED = RunStatus.QUEUED.value
    RUNNING = RunStatus.RUNNING.value


# How a run's state counts in a backfill's progress.
PROGRESS_OF = {
    RunStatus.SUCCEEDED: Bucket.DONE,
    RunStatus.FAILED: Bucket.FAILED,
    RunStatus.CANCELLED: Bucket.CANCELLED,
    RunStatus.QUEUED: Bucket.QUEUED,
    RunStatus.PENDING: Bucket.RUNNING,  # admitted, its task about to start
    RunStatus.RUNNING: Bucket.RUNNING,
}
PROGRESS_KEYS = tuple(b.value for b in Bucket)
# A backfill with a run in one of these is still going (``GET /backfills?active=true``).
GOING_STATUSES = tuple(
    str(status) for status, key in PROGRESS_OF.items() if key in (Bucket.QUEUED, Bucket.RUNNING)
)


@dataclass(frozen=True)
class NewBackfill:
    id: str
    pipeline: str
    cron: str
    timezone: str
    start: datetime
    end: datetime
    ticks: int
    priority: int
    version: int | None
    created_by: str | None
    created_at: datetime = field(default_factory=utcnow)

    def row(self) -> BackfillRow:
        return BackfillRow(
            id=self.id, pipeline=self.pipeline, cron=self.cron, timezone=self.timezone,
            start=self.start, end=self.end, ticks=self.ticks, priority=self.priority,
            version=self.version, created_at=self.created_at, created_by=self.created_by,
        )  # fmt: skip


@dataclass(frozen=True)
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    queued: int = 0
    running: int = 0

    @property
    def ended(self) -> int:
        return self.done + self.failed + self.cancelled

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, **{k: getattr(self, k) for k in PROGRESS_KEYS}, "ended": self.ended}


def progress_of(statuses: dict[str, int], total: int) -> Progress:
    counts = dict.fromkeys(PROGRESS_KEYS, 0)
    for status, n in statuses.items():
        try:
            key = PROGRESS_OF.get(RunStatus(status))
        except ValueError:  # a state this release does not know: counted in total only
            continue
        if key is not None:
            counts[key] += n
    return Progress(total=total, **counts)


def backfill_status(progress: Progress, cancelled: bool) -> BackfillStatus:
    """``queued`` (no run started yet), ``running``, then once every run ended ``cancelled`` (it was
    cancelled), ``failed`` (a run failed) or ``succeeded``."""
    if progress.queued or progress.running:
        return BackfillStatus.RUNNING if progress.running or progress.ended else BackfillStatus.QUEUED
    if cancelled:
        return BackfillStatus.CANCELLED
    if progress.failed or progress.cancelled:
        return BackfillStatus.FAILED
    return BackfillStatus.SUCCEEDED


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True, kw_only=True)
class BackfillTick:
    """One tick of a backfill and its run (``status``: the run's, as stored: a state a newer release
    wrote is shown as it is, as ``progress_of`` counts it in ``total`` only)."""

    tick_at: datetime | None
    run_id: str
    status: str
    version: int | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "tick_at": _iso(self.tick_at),
            "run_id": self.run_id,
            "status": self.status,
            "version": self.version,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "error": self.error,
        }


@dataclass(frozen=True, kw_only=True)
class BackfillView:
    """A backfill as read: what was asked, its progress and state (from its runs); ``ticks`` only
    when one backfill is read (``BackfillRecords.get``), None in a listing."""

    asked: NewBackfill
    status: BackfillStatus
    progress: Progress
    cancelled_at: datetime | None
    cancelled_running: bool | None
    ticks: tuple[BackfillTick, ...] | None = None

    @classmethod
    def of(cls, row: BackfillRow, progress: Progress, ticks: tuple[BackfillTick, ...] | None = None) -> BackfillView:
        asked = NewBackfill(
            row.id, row.pipeline, row.cron, row.timezone, row.start, row.end, row.ticks, row.priority,
            row.version, row.created_by, row.created_at,
        )  # fmt: skip
        status = backfill_status(progress, row.cancelled_at is not None)
        return cls(
            asked=asked, status=status, progress=progress, cancelled_at=row.cancelled_at,
            cancelled_running=row.cancelled_running, ticks=ticks,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """``GET /backfills``' shape of one (``GET /backfills/{id}``'s with its ``ticks``)."""
        asked = self.asked
        return {
            "id": asked.id,
            "pipeline": asked.pipeline,
            "cron": asked.cron,
            "timezone": asked.timezone,
            "from": _iso(asked.start),
            "to": _iso(asked.end),
            "count": asked.ticks,
            "priority": asked.priority,
            "version": asked.version,
            "status": self.status.value,
            "progress": self.progress.as_dict(),
            "created_at": _iso(asked.created_at),
            "created_by": asked.created_by,
            "cancelled_at": _iso(self.cancelled_at),
            "cancelled_running": self.cancelled_running,
            **({"ticks": [t.to_json() for t in self.ticks]} if self.ticks is not None else {}),
        }


class BackfillRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def recent(
        self, pipeline: str | None = None, limit: int = 50, active: bool | None = None
    ) -> list[BackfillView]:
        """Backfills newest first, each with its progress (``active``: only those with runs still
        queued or going, or only those without)."""
        async with self.store.session("list backfills") as s:
            query = select(BackfillRow).order_by(BackfillRow.created_at.desc(), BackfillRow.id)
            if pipeline is not None:
                query = query.where(BackfillRow.pipeline == pipeline)
            if active is not None:
                going = exists().where(
                    and_(RunRow.backfill_id == BackfillRow.id, RunRow.status.in_(GOING_STATUSES))
                )
                query = query.where(going if active else ~going)
            rows = (await s.scalars(query.limit(limit))).all()
            counts: dict[str, dict[str, int]] = {}
            if rows:
                found = await s.execute(
                    select(RunRow.backfill_id, RunRow.status, func.count())
                    .where(RunRow.backfill_id.in_([r.id for r in rows]))
                    .group_by(RunRow.backfill_id, RunRow.status)
                )
                for backfill_id, status, n in found.tuples().all():
                    counts.setdefault(str(backfill_id), {})[status] = int(n)
            return [BackfillView.of(r, progress_of(counts.get(r.id, {}), r.ticks)) for r in rows]

    async def get(self, backfill_id: str) -> BackfillView | None:
        """One backfill with its progress and its ticks in order (``tick_at``, the run and its state)."""
        async with self.store.session(f"read backfill {backfill_id}") as s:
            row = await s.get(BackfillRow, backfill_id)
            if row is None:
                return None
            runs = (
                await s.execute(
                    select(
                        RunRow.id, RunRow.tick_at, RunRow.status, RunRow.version, RunRow.created_at,
                        RunRow.started_at, RunRow.ended_at, RunRow.error,
                    )  # fmt: skip
                    .where(RunRow.backfill_id == backfill_id)
                    .order_by(RunRow.tick_at, RunRow.created_at)
                )
            ).tuples().all()
            statuses: dict[str, int] = {}
            for run in runs:
                statuses[run[2]] = statuses.get(run[2], 0) + 1
            ticks = tuple(
                BackfillTick(
                    tick_at=tick, run_id=run_id, status=status, version=version, started_at=started,
                    ended_at=ended, error=error,
                )  # fmt: skip
                for run_id, tick, status, version, _created, started, ended, error in runs
            )
            return BackfillView.of(row, progress_of(statuses, row.ticks), ticks)

    async def run_ids(self, backfill_id: str, statuses: tuple[RunStatus, ...]) -> list[str]:
        """The backfill's runs in these states, in tick order."""
        async with self.store.session(f"list the runs of backfill {backfill_id}") as s:
            found = await s.scalars(
                select(RunRow.id)
                .where(RunRow.backfill_id == backfill_id, RunRow.status.in_([str(x) for x in statuses]))
                .order_by(RunRow.tick_at, RunRow.created_at)
            )
            return list(found.all())

    async def cancel(
        self, backfill_id: str, run_ids: list[str], running: bool, reason: str
    ) -> list[str]:
        """In one transaction: mark the backfill cancelled (the first cancel's time stays; a later
        one with ``running`` records that) and end ``cancelled`` those of ``run_ids`` that are still
        queued (their pending steps too). The ids it cancelled, in tick order."""
        async with self.store.session(f"cancel backfill {backfill_id}") as s:
            row = await s.get(BackfillRow, backfill_id, with_for_update=True)
            if row is None:
                return []
            now = utcnow()
            row.cancelled_at = row.cancelled_at or now
            row.cancelled_running = bool(row.cancelled_running) or running
            if not run_ids:
                return []
            queued = list(
                (
                    await s.scalars(
                        select(RunRow.id)
                        .where(
                            RunRow.id.in_(run_ids),
                            RunRow.backfill_id == backfill_id,
                            RunRow.status == RunStatus.QUEUED,
                        )
                        .order_by(RunRow.tick_at, RunRow.created_at)
                    )
                ).all()
            )
            if queued:
                await s.execute(
                    update(RunRow)
                    .where(RunRow.id.in_(queued), RunRow.status == RunStatus.QUEUED)
                    .values(status=RunStatus.CANCELLED, error=reason, ended_at=now)
                )
                await s.execute(
                    update(RunStepRow)
                    .where(RunStepRow.run_id.in_(queued), RunStepRow.status == StepStatus.PENDING)
                    .values(status=StepStatus.CANCELLED, error=reason)
                )
            return queued


async def forget_backfills_before(store: Store, cutoff: datetime) -> int:
    """Delete backfills created before ``cutoff`` none of whose runs is left (retention removed them)."""
    async with store.session("forget old backfills") as s:
        orphaned = ~exists().where(RunRow.backfill_id == BackfillRow.id)
        result = await s.execute(delete(BackfillRow).where(BackfillRow.created_at < cutoff, orphaned))
        return int(getattr(result, "rowcount", 0) or 0)
