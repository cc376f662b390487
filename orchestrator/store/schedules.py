"""Schedules and their ticks in the database: the ``schedules`` rows (cron schedules and data triggers)
and the ``schedule_ticks`` that record what each tick did; read as frozen ``domain.schedule`` values.

``ScheduleTables`` is a part of ``Store`` (it runs in the store's transactions: ``session`` writes,
one writer at a time, ``reading`` reads beside them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ..domain.causes import Overlap
from ..domain.schedule import DEFAULT_OPTIONS, Catchup, Schedule, ScheduleOptions, Tick
from ..domain.states import TickOutcome
from .tables import ScheduleRow, TickRow, utcnow

T = TypeVar("T")
# ``(due_at, outcome, run_id, reason)`` of one schedule's tick.
TickEntry = tuple[datetime, TickOutcome, str | None, str | None]
# ``(schedule_id, pipeline, due_at, outcome, run_id, reason)`` of any schedule's tick.
AnyTickEntry = tuple[str, str, datetime, TickOutcome, str | None, str | None]


class ScheduleTables:
    """The schedule and tick methods of ``Store``."""

    if TYPE_CHECKING:

        def session(self, doing: str) -> AbstractAsyncContextManager[AsyncSession]: ...

        def reading(self, doing: str) -> AbstractAsyncContextManager[AsyncSession]: ...

        async def read(self, doing: str, body: Callable[[Session], T]) -> T: ...

    async def add_schedule(
        self,
        schedule_id: str,
        pipeline: str,
        cron: str,
        timezone: str,
        options: ScheduleOptions = DEFAULT_OPTIONS,
        *,
        dataset: str | None = None,
    ) -> Schedule:
        """A new schedule (``dataset``: a data trigger, with ``cron`` ""); its ticks count from now."""
        async with self.session(f"schedule {pipeline}") as s:
            row = ScheduleRow(
                id=schedule_id,
                pipeline=pipeline,
                cron=cron,
                timezone=timezone,
                last_tick_at=utcnow(),
                dataset=dataset,
                **_columns(options),
            )
            s.add(row)
            await s.flush()
            return schedule_of(row)

    async def replace_schedule(
        self,
        schedule_id: str,
        cron: str,
        timezone: str,
        options: ScheduleOptions = DEFAULT_OPTIONS,
    ) -> None:
        """New cron and policies for a schedule (the ones not given: none, read as the defaults);
        its ticks count from now."""
        async with self.session(f"replace schedule {schedule_id}") as s:
            await s.execute(
                update(ScheduleRow)
                .where(ScheduleRow.id == schedule_id)
                .values(cron=cron, timezone=timezone, last_tick_at=utcnow(), **_columns(options))
            )

    async def list_schedules(self, pipeline: str | None = None) -> list[Schedule]:
        """Every schedule (and data trigger), or ``pipeline``'s only, oldest first."""
        async with self.reading("list schedules") as s:
            query = select(ScheduleRow).order_by(ScheduleRow.created_at)
            if pipeline is not None:
                query = query.where(ScheduleRow.pipeline == pipeline)
            return [schedule_of(r) for r in (await s.scalars(query)).all()]

    async def data_triggers(self, dataset: str | None = None) -> list[Schedule]:
        """The data triggers (of ``dataset`` only, if given), oldest first: found by the database, not
        among every schedule (a ground-truth advance and ``GET /jobs`` ask, and cron schedules can be
        thousands)."""
        query = select(ScheduleRow).where(ScheduleRow.dataset.is_not(None)).order_by(ScheduleRow.created_at)
        if dataset is not None:
            query = query.where(ScheduleRow.dataset == dataset)
        return await self.read("list data triggers", lambda s: [schedule_of(r) for r in s.scalars(query).all()])

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        async with self.reading(f"read schedule {schedule_id}") as s:
            row = await s.get(ScheduleRow, schedule_id)
            return schedule_of(row) if row else None

    async def get_schedules(self, schedule_ids: Sequence[str]) -> list[Schedule | None]:
        """Several schedules in one query: each id's schedule, or None where it is gone (in order)."""
        async with self.reading(f"read {len(schedule_ids)} schedule(s)") as s:
            rows = (await s.scalars(select(ScheduleRow).where(ScheduleRow.id.in_(set(schedule_ids))))).all()
            found = {row.id: schedule_of(row) for row in rows}
            return [found.get(schedule_id) for schedule_id in schedule_ids]

    async def delete_schedule(self, schedule_id: str) -> bool:
        async with self.session(f"delete schedule {schedule_id}") as s:
            result = await s.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id))
            return bool(getattr(result, "rowcount", 0))

    async def record_tick(
        self,
        schedule_id: str,
        pipeline: str,
        due_at: datetime,
        outcome: TickOutcome,
        run_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        await self.record_ticks(schedule_id, pipeline, [(due_at, outcome, run_id, reason)])

    async def record_ticks(self, schedule_id: str, pipeline: str, ticks: list[TickEntry]) -> None:
        """Record ``(due_at, outcome, run_id, reason)`` ticks, in order, in one transaction; the
        schedule's ``last_tick_at`` moves to the latest of them (never back)."""
        await self.record_tick_batch(
            [
                (schedule_id, pipeline, due_at, outcome, run_id, reason)
                for due_at, outcome, run_id, reason in ticks
            ]
        )

    async def record_tick_batch(self, ticks: list[AnyTickEntry]) -> list[None]:
        """Record ``(schedule_id, pipeline, due_at, outcome, run_id, reason)`` ticks of any schedules
        in one transaction (a burst of ticks, see ``batching``), in order; each schedule's
        ``last_tick_at`` moves to its latest tick (never back)."""
        if not ticks:
            return []
        latest: dict[str, datetime] = {}
        for schedule_id, _, due_at, _, _, _ in ticks:
            latest[schedule_id] = max(due_at, latest.get(schedule_id, due_at))
        async with self.session(f"record {len(ticks)} tick(s)") as s:
            await s.execute(
                insert(TickRow),
                [
                    {
                        "schedule_id": schedule_id,
                        "pipeline": pipeline,
                        "due_at": due_at,
                        "outcome": outcome,
                        "run_id": run_id,
                        "reason": reason,
                    }
                    for schedule_id, pipeline, due_at, outcome, run_id, reason in ticks
                ],
            )
            schedules = cast(Table, ScheduleRow.__table__)  # Core: one executemany for every schedule
            table = schedules.c
            await s.execute(
                update(schedules)
                .where(table.id == bindparam("sid"))
                .where(table.last_tick_at.is_(None) | (table.last_tick_at < bindparam("due")))
                .values(last_tick_at=bindparam("due")),
                [{"sid": schedule_id, "due": due_at} for schedule_id, due_at in latest.items()],
            )
        return [None] * len(ticks)

    async def list_ticks(self, schedule_id: str | None = None, limit: int = 100) -> list[Tick]:
        """The newest ``limit`` ticks (of ``schedule_id`` only, if given), newest first."""
        async with self.reading("list schedule ticks") as s:
            return await _ticks(s, schedule_id, limit)

    async def recent_ticks(self, schedule_ids: Sequence[str], limit: int) -> dict[str, list[Tick]]:
        """Each schedule's ``limit`` newest ticks (newest first), in one transaction: an indexed
        query per schedule, which stays cheap however many ticks the table holds."""
        async with self.reading(f"list the ticks of {len(schedule_ids)} schedule(s)") as s:
            return {schedule_id: await _ticks(s, schedule_id, limit) for schedule_id in schedule_ids}


async def _ticks(s: AsyncSession, schedule_id: str | None, limit: int) -> list[Tick]:
    query = select(TickRow).order_by(TickRow.id.desc()).limit(limit)
    if schedule_id:
        query = query.where(TickRow.schedule_id == schedule_id)
    return [
        Tick(t.schedule_id, t.pipeline, t.due_at, t.recorded_at, t.outcome, t.run_id, t.reason)
        for t in (await s.scalars(query)).all()
    ]


def _columns(options: ScheduleOptions) -> dict[str, str | int | None]:
    """The policy columns of a schedule's row."""
    return {
        "overlap": options.overlap,
        "catchup": options.catchup,
        "catchup_window": options.catchup_window,
        "priority": options.priority,
    }


def schedule_of(row: ScheduleRow) -> Schedule:
    """The row as a frozen value, with the defaults of the policies it does not set."""
    return Schedule(
        id=row.id,
        pipeline=row.pipeline,
        cron=row.cron,
        timezone=row.timezone,
        created_at=row.created_at,
        last_tick_at=row.last_tick_at,
        overlap=cast(Overlap, row.overlap or "skip"),
        priority=row.priority or 0,
        catchup=cast(Catchup, row.catchup or "latest"),
        catchup_window=row.catchup_window,
        dataset=row.dataset,
    )
