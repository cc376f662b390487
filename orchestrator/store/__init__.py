"""The instance's SQL database (SQLite by default, PostgreSQL in the compose deployment).

Contracts: every method is one transaction; an unreachable database raises ``DatabaseUnavailable``
(HTTP 503); values returned are plain dicts or models, never ORM rows bound to a session.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, event, insert, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ..domain.pipeline import Pipeline
from ..errors import DatabaseUnavailable, MaoError
from . import migrate
from .tables import PipelineRow, ScheduleRow, SecretRow, TickRow, utcnow

log = logging.getLogger(__name__)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    async def start(self) -> None:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.startswith("postgresql"):
            kwargs["connect_args"] = {"timeout": 5}
        self.engine = create_async_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        async with self._translate("migrate the schema"):
            async with self.engine.begin() as conn:
                await conn.run_sync(migrate.upgrade)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _translate(self, doing: str) -> AsyncIterator[None]:
        try:
            yield
        except MaoError:
            raise
        except (OperationalError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(
                f"the database did not answer while trying to {doing}: {_short(exc)}"
            ) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailable(f"lost the database connection while trying to {doing}") from exc
            raise
        except SQLAlchemyError as exc:
            log.exception("database error while trying to %s", doing)
            raise MaoError(f"database error while trying to {doing}") from exc

    @contextlib.asynccontextmanager
    async def session(self, doing: str) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        assert self._sessions is not None, "Store.start() was not called"
        async with self._translate(doing):
            async with self._sessions() as session, session.begin():
                yield session

    async def check(self) -> None:
        async with self.session("answer a health check") as s:
            await s.execute(text("SELECT 1"))

    # -- pipelines ------------------------------------------------------------------------------
    async def save_pipeline(self, pipeline: Pipeline, before_commit: Callable[[], Awaitable[Any]]) -> None:
        """Insert or replace a pipeline and its secrets. ``before_commit`` runs inside the transaction
        (it registers the pipeline in etcd): if it raises, nothing is stored."""
        async with self.session(f"save pipeline {pipeline.name}") as s:
            row = await s.get(PipelineRow, pipeline.name)
            if row is None:
                row = PipelineRow(name=pipeline.name)
                s.add(row)
            row.description = pipeline.description
            row.steps = pipeline.public_steps()
            row.run_timeout = pipeline.run_timeout
            row.updated_at = utcnow()
            await s.execute(delete(SecretRow).where(SecretRow.pipeline == pipeline.name))
            await s.flush()
            for step in pipeline.steps:
                for key, value in (step.private_env or {}).items():
                    s.add(SecretRow(pipeline=pipeline.name, step=step.name, key=key, value=value))
            await s.flush()
            await before_commit()

    async def get_pipeline(self, name: str, with_secrets: bool = False) -> Pipeline | None:
        async with self.session(f"read pipeline {name}") as s:
            row = await s.get(PipelineRow, name)
            if row is None:
                return None
            secrets = await self._secrets(s, [name]) if with_secrets else {}
            return _pipeline(row, secrets.get(name, {}))

    async def list_pipelines(self) -> list[Pipeline]:
        async with self.session("list pipelines") as s:
            rows = (await s.scalars(select(PipelineRow).order_by(PipelineRow.name))).all()
            return [_pipeline(row, {}) for row in rows]

    async def delete_pipeline(self, name: str, before_commit: Callable[[], Awaitable[Any]]) -> list[str]:
        """Delete a pipeline with its secrets and schedules (runs stay); returns the schedule ids."""
        async with self.session(f"delete pipeline {name}") as s:
            schedule_ids = list(
                (await s.scalars(select(ScheduleRow.id).where(ScheduleRow.pipeline == name))).all()
            )
            await s.execute(delete(ScheduleRow).where(ScheduleRow.pipeline == name))
            await s.execute(delete(SecretRow).where(SecretRow.pipeline == name))
            await s.execute(delete(PipelineRow).where(PipelineRow.name == name))
            await before_commit()
            return schedule_ids

    async def _secrets(self, s: AsyncSession, names: list[str]) -> dict[str, dict[str, dict[str, str]]]:
        result: dict[str, dict[str, dict[str, str]]] = {}
        for row in (await s.scalars(select(SecretRow).where(SecretRow.pipeline.in_(names)))).all():
            result.setdefault(row.pipeline, {}).setdefault(row.step, {})[row.key] = row.value
        return result

    # -- runs ----------------------------------------------------------------------------------
    # Kept for callers outside the run engine (API, federation scheduler); see ``store.runs``.
    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        from .runs import RunRecords

        return await RunRecords(self).get(run_id)

    async def list_runs(
        self,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 50,
        trigger: str | None = None,
    ) -> list[dict[str, Any]]:
        from .runs import RunRecords

        return await RunRecords(self).list(pipeline=pipeline, status=status, limit=limit, trigger=trigger)

    # -- schedules ------------------------------------------------------------------------------
    async def add_schedule(
        self, schedule_id: str, pipeline: str, cron: str, timezone: str, **options: Any
    ) -> dict[str, Any]:
        """``options``: ``overlap``, ``catchup``, ``catchup_window``, ``dataset``, ``priority`` (columns)."""
        async with self.session(f"schedule {pipeline}") as s:
            row = ScheduleRow(
                id=schedule_id,
                pipeline=pipeline,
                cron=cron,
                timezone=timezone,
                last_tick_at=utcnow(),
                **options,
            )
            s.add(row)
            await s.flush()
            return schedule_to_dict(row)

    async def replace_schedule(self, schedule_id: str, cron: str, timezone: str, **options: Any) -> None:
        """New cron and policies for a schedule; its ticks count from now."""
        async with self.session(f"replace schedule {schedule_id}") as s:
            await s.execute(
                update(ScheduleRow)
                .where(ScheduleRow.id == schedule_id)
                .values(cron=cron, timezone=timezone, last_tick_at=utcnow(), **options)
            )

    async def list_schedules(self, pipeline: str | None = None) -> list[dict[str, Any]]:
        """Every schedule (and data trigger), or ``pipeline``'s only, oldest first."""
        async with self.session("list schedules") as s:
            query = select(ScheduleRow).order_by(ScheduleRow.created_at)
            if pipeline is not None:
                query = query.where(ScheduleRow.pipeline == pipeline)
            return [schedule_to_dict(r) for r in (await s.scalars(query)).all()]

    async def data_triggers(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """The data triggers (of ``dataset`` only, if given), oldest first: found by the database, not
        among every schedule (a ground-truth advance and ``GET /jobs`` ask, and cron schedules can be
        thousands)."""
        async with self.session("list data triggers") as s:
            query = (
                select(ScheduleRow).where(ScheduleRow.dataset.is_not(None)).order_by(ScheduleRow.created_at)
            )
            if dataset is not None:
                query = query.where(ScheduleRow.dataset == dataset)
            return [schedule_to_dict(r) for r in (await s.scalars(query)).all()]

    async def get_schedule(self, schedule_id: str) -> dict[str, Any] | None:
        async with self.session(f"read schedule {schedule_id}") as s:
            row = await s.get(ScheduleRow, schedule_id)
            return schedule_to_dict(row) if row else None

    async def delete_schedule(self, schedule_id: str) -> bool:
        async with self.session(f"delete schedule {schedule_id}") as s:
            result = await s.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id))
            return bool(getattr(result, "rowcount", 0))

    async def record_tick(
        self,
        schedule_id: str,
        pipeline: str,
        due_at: datetime,
        outcome: str,
        run_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        await self.record_ticks(schedule_id, pipeline, [(due_at, outcome, run_id, reason)])

    async def record_ticks(
        self, schedule_id: str, pipeline: str, ticks: list[tuple[datetime, str, str | None, str | None]]
    ) -> None:
        """Record ``(due_at, outcome, run_id, reason)`` ticks, in order, in one transaction; the
        schedule's ``last_tick_at`` moves to the latest of them (never back)."""
        if not ticks:
            return
        async with self.session(f"record ticks of schedule {schedule_id}") as s:
            for due_at, outcome, run_id, reason in ticks:
                s.add(
                    TickRow(
                        schedule_id=schedule_id,
                        pipeline=pipeline,
                        due_at=due_at,
                        outcome=outcome,
                        run_id=run_id,
                        reason=reason,
                    )
                )
            latest = max(t[0] for t in ticks)
            await s.execute(
                update(ScheduleRow)
                .where(ScheduleRow.id == schedule_id)
                .where((ScheduleRow.last_tick_at.is_(None)) | (ScheduleRow.last_tick_at < latest))
                .values(last_tick_at=latest)
            )

    async def get_schedules(self, schedule_ids: list[str]) -> list[dict[str, Any] | None]:
        """Several schedules in one query: each id's schedule, or None where it is gone (in order)."""
        async with self.session(f"read {len(schedule_ids)} schedule(s)") as s:
            rows = (await s.scalars(select(ScheduleRow).where(ScheduleRow.id.in_(set(schedule_ids))))).all()
            found = {row.id: schedule_to_dict(row) for row in rows}
            return [found.get(schedule_id) for schedule_id in schedule_ids]

    async def record_tick_batch(
        self, ticks: list[tuple[str, str, datetime, str, str | None, str | None]]
    ) -> list[None]:
        """Record ``(schedule_id, pipeline, due_at, outcome, run_id, reason)`` ticks of any schedules
        in one transaction (a burst of ticks, see ``batching``); each schedule's ``last_tick_at``
        moves to its latest tick (never back)."""
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

    async def list_ticks(self, schedule_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        async with self.session("list schedule ticks") as s:
            return await _ticks(s, schedule_id, limit)

    async def recent_ticks(self, schedule_ids: list[str], limit: int) -> dict[str, list[dict[str, Any]]]:
        """Each schedule's ``limit`` newest ticks (newest first), in one transaction: an indexed
        query per schedule, which stays cheap however many ticks the table holds."""
        async with self.session(f"list the ticks of {len(schedule_ids)} schedule(s)") as s:
            return {schedule_id: await _ticks(s, schedule_id, limit) for schedule_id in schedule_ids}


async def _ticks(s: AsyncSession, schedule_id: str | None, limit: int) -> list[dict[str, Any]]:
    query = select(TickRow).order_by(TickRow.id.desc()).limit(limit)
    if schedule_id:
        query = query.where(TickRow.schedule_id == schedule_id)
    return [
        {
            "schedule_id": t.schedule_id,
            "pipeline": t.pipeline,
            "due_at": _iso(t.due_at),
            "recorded_at": _iso(t.recorded_at),
            "outcome": t.outcome,
            "run_id": t.run_id,
            "reason": t.reason,
        }
        for t in (await s.scalars(query)).all()
    ]


def _pipeline(row: PipelineRow, secrets: dict[str, dict[str, str]]) -> Pipeline:
    steps = [{**step, "private_env": secrets.get(step["name"]) or None} for step in row.steps]
    return Pipeline.model_validate(
        {"name": row.name, "description": row.description, "steps": steps, "run_timeout": row.run_timeout}
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def schedule_to_dict(row: ScheduleRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "pipeline": row.pipeline,
        "cron": row.cron,
        "timezone": row.timezone,
        "created_at": _iso(row.created_at),
        "last_tick_at": _iso(row.last_tick_at),
        "overlap": row.overlap or "skip",
        "priority": row.priority or 0,
        **({"trigger": {"dataset": row.dataset}} if row.dataset else {}),
        **(
            {"catchup": row.catchup or "latest", "catchup_window": row.catchup_window}
            if not row.dataset
            else {}
        ),
    }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the database; a power cut may lose the last few run-record
    # updates, which is a fair price for not paying an fsync on each of a step's bookkeeping writes.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _short(exc: BaseException) -> str:
    text_ = str(exc).strip() or type(exc).__name__
    return text_.splitlines()[0][:300]
