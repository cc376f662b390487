"""Cron schedules of this instance's pipelines.

The database is the source of truth: schedules are rows, re-armed in APScheduler at every start, and
every tick is recorded (fired with its run, or skipped and why). A tick that finds the previous run
still going is skipped, not stacked. Ticks missed while the instance was down lead to at most one
catch-up run at start.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from .errors import BadRequest, MaoError, NotFound
from .metrics import UNSERVED, Metrics

if TYPE_CHECKING:
    from .pipelines.runner import Runner
    from .store import Store

log = logging.getLogger(__name__)


def make_trigger(cron: str, timezone: str = "UTC") -> CronTrigger:
    """A 5-field cron trigger; BadRequest (400) naming what is wrong otherwise."""
    if not isinstance(cron, str) or not cron.strip():
        raise BadRequest("cron must be a 5-field cron expression such as '*/15 * * * *'", code="invalid_cron")
    if not isinstance(timezone, str):
        raise BadRequest(
            "timezone must be a string such as 'UTC' or 'Europe/Zurich'", code="invalid_timezone"
        )
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(
            f"unknown timezone {timezone!r} (use an IANA name such as 'Europe/Zurich')",
            code="invalid_timezone",
        ) from None
    try:
        return CronTrigger.from_crontab(cron.strip(), timezone=zone)
    except ValueError as exc:
        raise BadRequest(f"invalid cron expression {cron!r}: {exc}", code="invalid_cron") from None


def fire_times(trigger: CronTrigger, after: datetime, until: datetime, limit: int = 1000) -> list[datetime]:
    """The trigger's fire times in (after, until], at most ``limit`` of them (the earliest)."""
    times: list[datetime] = []
    moment = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while moment is not None and moment <= until and len(times) < limit:
        times.append(moment)
        moment = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
    return times


# APScheduler fires at (or just after) the due time; a tick that runs a little early (clock jitter)
# still belongs to the fire time it is about to reach.
DUE_JITTER = timedelta(seconds=1)


def due_time(trigger: CronTrigger, now: datetime) -> datetime:
    """The fire time a tick running at ``now`` stands for: the latest one in the hour before
    ``now + DUE_JITTER``; ``now`` (whole seconds) when there is none (a tick that came very late)."""
    moments = fire_times(trigger, now - timedelta(hours=1), now + DUE_JITTER, limit=100)
    return moments[-1] if moments else now.replace(microsecond=0)


class Scheduler:
    metrics: Metrics = UNSERVED  # the node's, set by Node.build

    def __init__(self, store: Store, runner: Runner) -> None:
        self.store = store
        self.runner = runner
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    async def start(self) -> None:
        self._scheduler.start()
        now = datetime.now(UTC)
        for schedule in await self.store.list_schedules():
            try:
                self._arm(schedule)
            except BadRequest as exc:  # e.g. a timezone this host's tzdata no longer knows
                log.error(
                    "schedule %s of %s cannot be armed: %s", schedule["id"], schedule["pipeline"], exc.message
                )
                continue
            await self._catch_up(schedule, now)
        log.info("scheduler started with %d schedule(s)", len(self._scheduler.get_jobs()))

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def add(self, pipeline: str, cron: str, timezone: str = "UTC") -> dict[str, Any]:
        make_trigger(cron, timezone)  # validate before anything is stored
        if await self.store.get_pipeline(pipeline) is None:
            raise NotFound(f"pipeline {pipeline!r} is not initialised on this instance (POST /pipeline/init)")
        schedule = await self.store.add_schedule(uuid.uuid4().hex, pipeline, cron.strip(), timezone)
        self._arm(schedule)
        log.info("pipeline %s scheduled with %r (%s) as job %s", pipeline, cron, timezone, schedule["id"])
        return schedule

    async def remove(self, schedule_id: str) -> None:
        if not await self.store.delete_schedule(schedule_id):
            raise NotFound(f"no scheduled job {schedule_id!r} on this instance")
        self.forget(schedule_id)

    def forget(self, schedule_id: str) -> None:
        """Stop firing a schedule whose row is already gone (e.g. deleted with its pipeline)."""
        if self._scheduler.get_job(schedule_id):
            self._scheduler.remove_job(schedule_id)

    def next_run_times(self) -> dict[str, str | None]:
        return {
            job.id: job.next_run_time.astimezone(UTC).isoformat() if job.next_run_time else None
            for job in self._scheduler.get_jobs()
        }

    def _arm(self, schedule: dict[str, Any]) -> None:
        self.arm(schedule["id"], schedule["cron"], schedule["timezone"], self._tick, schedule["id"])

    def arm(self, job_id: str, cron: str, timezone: str, callback: Callable[..., Any], *args: Any) -> None:
        """Fire ``callback(*args)`` at every tick of ``cron``; replaces a job of the same id. Also used
        for federation-wide schedules, so that ``/jobs`` lists both kinds."""
        self._scheduler.add_job(
            callback,
            trigger=make_trigger(cron, timezone),
            args=list(args),
            id=job_id,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=60,
        )

    async def _catch_up(self, schedule: dict[str, Any], now: datetime) -> None:
        since = datetime.fromisoformat(schedule["last_tick_at"] or schedule["created_at"])
        missed = fire_times(make_trigger(schedule["cron"], schedule["timezone"]), since, now, limit=1)
        if missed:
            await self._fire(schedule, due_at=now, catch_up_since=since)

    async def _tick(self, schedule_id: str) -> None:
        schedule = await self.store.get_schedule(schedule_id)
        if schedule is None:  # deleted meanwhile
            self.forget(schedule_id)
            return
        trigger = make_trigger(schedule["cron"], schedule["timezone"])
        await self._fire(schedule, due_at=due_time(trigger, datetime.now(UTC)))

    async def _fire(
        self, schedule: dict[str, Any], due_at: datetime, catch_up_since: datetime | None = None
    ) -> None:
        pipeline, schedule_id = schedule["pipeline"], schedule["id"]
        reason = f"catch-up for ticks missed since {catch_up_since.isoformat()}" if catch_up_since else None
        try:
            if (active := self.runner.active_run(pipeline)) is not None:
                reason = f"previous run {active} still running"
                await self.store.record_tick(
                    schedule_id, pipeline, due_at, "skipped", run_id=active, reason=reason
                )
                log.info("tick of %s at %s skipped: %s", pipeline, due_at.isoformat(), reason)
                self.metrics.tick("instance", "skipped")
                return
            run_id = await self.runner.start(pipeline, trigger="cron", schedule_id=schedule_id)
            self.metrics.tick("instance", "fired", lag=(datetime.now(UTC) - due_at).total_seconds())
            await self.store.record_tick(schedule_id, pipeline, due_at, "fired", run_id=run_id, reason=reason)
        except MaoError as exc:
            log.warning(
                "tick of %s at %s could not start a run: %s", pipeline, due_at.isoformat(), exc.message
            )
            self.metrics.tick("instance", "skipped")
            try:
                await self.store.record_tick(schedule_id, pipeline, due_at, "skipped", reason=exc.message)
            except MaoError:
                pass
