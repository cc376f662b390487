"""Cron schedules of this instance's pipelines.

The database is the source of truth: schedules are rows, re-armed in APScheduler at every start, and
every tick is recorded: ``fired`` with its run, ``skipped`` and why (the previous run still going), or
``missed`` and why (the instance was down and the catch-up policy did not run it; see ``catchup``).

The prototype's semantics: a pipeline has one schedule here unless a client asks for another
(``add``); scheduling it again replaces that schedule, which keeps its id. Data triggers are rows of
the same table (``dataset`` set, ``cron`` empty), fired by ``triggers`` instead of APScheduler.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ..domain.causes import CatchUp, CronTick, Refused, RunAsk, Skipped
from ..domain.schedule import DEFAULT_OPTIONS, Schedule, ScheduleOptions
from ..domain.states import TickOutcome
from ..errors import BadRequest, MaoError, NotFound
from ..metrics import UNSERVED, Metrics
from ..tasks import cancel_all, spawn
from . import catchup
from .batching import Coalescer
from .ticks import CLOCK, DUE_JITTER, Clock, due_time, fire_times, make_trigger

if TYPE_CHECKING:
    from ..runs.door import Door
    from ..store import Store
    from ..store.schedules import AnyTickEntry
    from .requests import ScheduleRun

__all__ = ["DUE_JITTER", "Scheduler", "due_time", "fire_times", "make_trigger"]

log = logging.getLogger(__name__)

# Missed ticks are looked for this far back at most (and enumerated up to this many).
CATCH_UP_HORIZON = timedelta(days=31)
MAX_ENUMERATED = 50_000
# catchup 'all' waits for the pipeline to be idle: how long it waits again when a run has ended
# and still holds its place.
IDLE_POLL = 0.2


class Scheduler:
    metrics: Metrics = UNSERVED  # the node's, set by Node.build

    def __init__(self, store: Store, door: Door, clock: Clock = CLOCK) -> None:
        self.store = store
        self.door = door
        self.clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._tasks: set[asyncio.Task[Any]] = set()
        # A burst of ticks (every schedule due the same second) reads and records in a few
        # transactions instead of two each: bench/schedules_bench.py.
        self._reads: Coalescer[str, Schedule | None] = Coalescer(
            store.get_schedules, "schedule reads of ticks"
        )
        self._writes: Coalescer[AnyTickEntry, None] = Coalescer(
            store.record_tick_batch, "tick records"
        )

    async def start(self) -> None:
        self._scheduler.start()
        now = self.clock.now()
        for schedule in await self.store.list_schedules():
            if schedule.is_trigger:
                continue  # a data trigger: fired by ``triggers``
            try:
                self._arm(schedule)
            except BadRequest as exc:  # e.g. a timezone this host's tzdata no longer knows
                log.error(
                    "schedule %s of %s cannot be armed: %s", schedule.id, schedule.pipeline, exc.message
                )
                continue
            await self._catch_up(schedule, now)
        log.info("scheduler started with %d schedule(s)", len(self._scheduler.get_jobs()))

    async def close(self) -> None:
        await cancel_all(self._tasks)
        await self._reads.close()
        await self._writes.close()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def add(
        self,
        pipeline: str,
        cron: str,
        timezone: str = "UTC",
        add: bool = False,
        options: ScheduleOptions = DEFAULT_OPTIONS,
    ) -> Schedule:
        """Schedule ``pipeline``; without ``add``, an existing cron schedule of it is replaced (and
        keeps its id, taking the policies given: the ones not given are the defaults)."""
        make_trigger(cron, timezone)  # validate before anything is stored
        if await self.store.get_pipeline(pipeline) is None:
            raise NotFound(f"pipeline {pipeline!r} is not initialised on this instance (POST /pipeline/init)")
        current = (
            []
            if add  # another schedule: what the pipeline has already does not matter
            else [s for s in await self.store.list_schedules(pipeline) if not s.is_trigger]
        )
        if current and not add:
            schedule_id = current[0].id
            await self.store.replace_schedule(schedule_id, cron.strip(), timezone, options)
            schedule = await self.store.get_schedule(schedule_id)
            if schedule is None:  # deleted meanwhile
                raise NotFound(f"schedule {schedule_id} of {pipeline!r} was deleted meanwhile")
            verb = "rescheduled"
        else:
            schedule_id = uuid.uuid4().hex
            schedule = await self.store.add_schedule(schedule_id, pipeline, cron.strip(), timezone, options)
            verb = "scheduled"
        self._arm(schedule)
        log.info("pipeline %s %s with %r (%s) as job %s", pipeline, verb, cron, timezone, schedule.id)
        return schedule

    async def schedule(self, ask: ScheduleRun) -> Schedule:
        """``POST /pipeline/run`` with a cron, on this instance: ``add`` with the ask's policies."""
        return await self.add(
            ask.name,
            ask.cron,
            ask.timezone,
            add=ask.add,
            options=ScheduleOptions(
                overlap=ask.overlap,
                catchup=ask.catchup or "latest",
                catchup_window=ask.catchup_window,
                priority=ask.priority,
            ),
        )

    async def remove(self, schedule_id: str) -> None:
        if not await self.store.delete_schedule(schedule_id):
            raise NotFound(f"no scheduled job {schedule_id!r} on this instance")
        self.forget(schedule_id)

    async def remove_pipeline(self, pipeline: str) -> list[str]:
        """Remove every local schedule (and data trigger) of ``pipeline``; their ids."""
        removed = []
        for schedule in await self.store.list_schedules(pipeline):
            if await self.store.delete_schedule(schedule.id):
                self.forget(schedule.id)
                removed.append(schedule.id)
        return removed

    def forget(self, schedule_id: str) -> None:
        """Stop firing a schedule whose row is already gone (e.g. deleted with its pipeline)."""
        if self._scheduler.get_job(schedule_id):
            self._scheduler.remove_job(schedule_id)

    def next_run_times(self) -> dict[str, str | None]:
        return {
            job.id: job.next_run_time.astimezone(UTC).isoformat() if job.next_run_time else None
            for job in self._scheduler.get_jobs()
        }

    def _arm(self, schedule: Schedule) -> None:
        self.arm(schedule.id, schedule.cron, schedule.timezone, self._tick, schedule.id)

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

    # -- catch-up -------------------------------------------------------------------------------
    async def _catch_up(self, schedule: Schedule, now: datetime) -> None:
        since = schedule.last_tick_at or schedule.created_at
        trigger = make_trigger(schedule.cron, schedule.timezone)
        # Ticks within DUE_JITTER of now belong to APScheduler, which fires them itself.
        until = now - DUE_JITTER
        horizon = max(since, now - CATCH_UP_HORIZON)
        missed = fire_times(trigger, horizon, until, limit=MAX_ENUMERATED)
        earlier = len(fire_times(trigger, since, horizon, limit=MAX_ENUMERATED)) if horizon > since else 0
        if not missed:
            return
        decided = catchup.plan(missed, schedule.catchup, schedule.catchup_window, now, earlier)
        pipeline, schedule_id = schedule.pipeline, schedule.id
        if decided.missed:
            await self.store.record_ticks(
                schedule_id,
                pipeline,
                [(tick, TickOutcome.MISSED, None, reason) for tick, reason in decided.missed],
            )
            for _ in decided.missed:
                self.metrics.tick("instance", TickOutcome.MISSED)
            log.info(
                "schedule %s of %s: %d tick(s) missed while the instance was down, recorded as missed",
                schedule_id,
                pipeline,
                len(decided.missed),
            )
        if len(decided.run) == 1:
            reason = f"catch-up for ticks missed since {since.isoformat()}"
            await self._fire(schedule, decided.run[0], reason=reason)
        elif decided.run:
            spawn(self._replay(schedule, decided.run), f"catch-up of schedule {schedule_id}", self._tasks)

    async def _replay(self, schedule: Schedule, ticks: list[datetime]) -> None:
        """catchup 'all': each missed tick's run, in order, one at a time."""
        for number, tick in enumerate(ticks, start=1):
            await self._wait_idle(schedule.pipeline)
            if await self.store.get_schedule(schedule.id) is None:
                log.info("schedule %s was removed: its catch-up stops", schedule.id)
                return
            reason = f"catch-up {number} of {len(ticks)} (catchup 'all')"
            run_id = await self._fire(schedule, tick, reason=reason)
            if run_id is not None:
                await self.door.wait(run_id)

    async def _wait_idle(self, pipeline: str) -> None:
        while (active := self.door.active_run(pipeline)) is not None:
            await self.door.wait(active)
            if self.door.active_run(pipeline) == active:  # ended, its place not given up yet
                await asyncio.sleep(IDLE_POLL)

    # -- one tick -------------------------------------------------------------------------------
    async def _tick(self, schedule_id: str) -> None:
        schedule = await self._reads.submit(schedule_id)
        if schedule is None:  # deleted meanwhile
            self.forget(schedule_id)
            return
        await self._fire(schedule, self.clock.due(schedule.cron, schedule.timezone))

    async def _fire(self, schedule: Schedule, due_at: datetime, reason: str | None = None) -> str | None:
        """Ask the door for the tick's run and record its decision: the run's id, or None. ``reason``:
        a catch-up's, kept with the fired tick."""
        pipeline, schedule_id = schedule.pipeline, schedule.id
        cause = CronTick(schedule_id, due_at) if reason is None else CatchUp(schedule_id, due_at)
        ask = RunAsk(pipeline, cause, overlap=schedule.overlap, priority=schedule.priority)
        decision = await self.door.request_run(ask)
        try:
            if isinstance(decision, Refused):
                raise decision.error
            if isinstance(decision, Skipped):
                await self._record(
                    schedule_id, pipeline, due_at, TickOutcome.SKIPPED, decision.in_the_way, decision.reason
                )
                log.info("tick of %s at %s skipped: %s", pipeline, due_at.isoformat(), decision.reason)
                self.metrics.tick("instance", TickOutcome.SKIPPED)
                return None
            self.metrics.tick("instance", TickOutcome.FIRED, lag=(self.clock.now() - due_at).total_seconds())
            if note := decision.note:
                reason = f"{reason}; {note}" if reason else note
            await self._record(schedule_id, pipeline, due_at, TickOutcome.FIRED, decision.run_id, reason)
            return decision.run_id
        except MaoError as exc:
            log.warning(
                "tick of %s at %s could not start a run: %s", pipeline, due_at.isoformat(), exc.message
            )
            self.metrics.tick("instance", TickOutcome.SKIPPED)
            try:
                await self._record(schedule_id, pipeline, due_at, TickOutcome.SKIPPED, None, exc.message)
            except MaoError:
                pass
            return None

    async def _record(
        self,
        schedule_id: str,
        pipeline: str,
        due_at: datetime,
        outcome: TickOutcome,
        run_id: str | None,
        reason: str | None,
    ) -> None:
        """Record one tick, in a transaction shared with the other ticks of the moment."""
        await self._writes.submit((schedule_id, pipeline, due_at, outcome, run_id, reason))
