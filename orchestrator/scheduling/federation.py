"""Federation-wide schedules: every instance keeps them armed, exactly one eligible instance fires a tick.

Keeping in step: a list-then-watch loop on ``/mao/v1/schedules/`` arms and disarms APScheduler jobs
as schedules come and go (the watch delivers a change within milliseconds; the list is read again
every ``RESYNC_EVERY`` seconds and after any broken watch, in case a stream went quiet).

At a tick, each instance decides for itself:
- eligible (it has the pipeline initialised and its labels match the placement): it races to create
  the tick's key. The one that creates it fires the run (or skips it, saying why) and writes the
  outcome into that key; the others do nothing. A tick therefore never runs twice, and is never
  skipped while an eligible instance is alive and reaches etcd.
- not eligible: it waits ``OBSERVER_DELAY`` seconds, and if nobody claimed the tick while no live
  instance is eligible, it records the tick as skipped and why ("not initialised on any eligible
  instance", "no eligible instance was alive").
Whoever records a tick also records as skipped the earlier ticks that have no record at all (the
whole federation, or etcd, was down then), after the tick's own outcome and as far as etcd lets it.
Before that, at its start, an eligible instance applies the schedule's catch-up policy to such ticks,
once federation-wide (``federation_catchup``).

The winner of a tick always writes its outcome: whatever fails once the claim is won (etcd, the
database, the door) makes the tick ``skipped`` with that reason; only the death of the process
can leave it ``claimed`` (which blocks nothing: only ``fired`` ticks are looked at).

A run fired by another instance counts as running (and skips the next tick) while it goes there
(``elsewhere``). The status ``unknown`` is written when the run ended but its end could not be read
from the database; it does not block.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..domain.causes import CatchUp, FederationTick, Refused, RunAsk, RunElsewhere, Skipped
from ..domain.states import TickOutcome
from ..errors import BadRequest, EtcdUnavailable, MaoError
from ..federation import keys, records
from ..federation.answers import KeyValue, WatchEvent
from ..federation.etcd import Etcd
from ..federation.members import Membership
from ..federation.records import ScheduleRecord
from ..federation.registry import Registry
from ..federation.watch import PrefixWatch
from ..metrics import UNSERVED, Metrics
from ..retry import Backoff, persist
from ..tasks import cancel_all, spawn
from .book import ScheduleBook, check_placement, labels_match, listed, require_registered
from .elsewhere import running_elsewhere
from .federation_catchup import catch_up_all, record_gaps
from .ticks import CLOCK, Clock, make_trigger

if TYPE_CHECKING:
    from ..config import Settings
    from ..runs.door import Door
    from ..store import Store
    from .cron import Scheduler
    from .requests import ScheduleRun

log = logging.getLogger(__name__)

RESYNC_EVERY = 30.0
OBSERVER_DELAY = 3.0
WRITE_RETRY_CAP = 30.0


class FederationScheduler:
    metrics: Metrics = UNSERVED  # the node's, set by Node.build

    def __init__(
        self,
        settings: Settings,
        etcd: Etcd,
        scheduler: Scheduler,
        door: Door,
        store: Store,
        membership: Membership,
        registry: Registry,
        clock: Clock = CLOCK,
    ) -> None:
        self.clock = clock
        self.instance = settings.instance_name
        self.labels = settings.labels
        self.etcd = etcd
        # The registry's sealer: schedules are sealed like registrations (federation/seals.py).
        self.book = ScheduleBook(etcd, getattr(registry, "sealer", None))
        self.scheduler = scheduler
        self.door = door
        self.store = store
        self.membership = membership
        self.registry = registry
        self._armed: dict[str, tuple[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._caught_up = False

    async def start(self) -> None:
        self._spawn(self._keep_in_step(), "federation schedules watch")

    async def close(self) -> None:
        await cancel_all(self._tasks)

    # -- the API's side -------------------------------------------------------------------------
    async def add(
        self,
        pipeline: str,
        cron: str,
        timezone: str,
        placement: object,
        overlap: str = "skip",
        catchup: str | None = None,
        catchup_window: int | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        make_trigger(cron, timezone)  # 400 before anything is stored
        checked = check_placement(placement)
        await require_registered(self.registry, pipeline)
        schedule_id = uuid.uuid4().hex
        schedule = {
            "id": schedule_id,
            "pipeline": pipeline,
            "cron": cron.strip(),
            "timezone": timezone,
            "placement": checked,
            "overlap": overlap,
            # A record without ``catchup`` (older versions) has no catch-up: its gaps are skipped.
            "catchup": catchup or "latest",
            "catchup_window": catchup_window,
            # Orders the run in the queue of the instance that wins the tick (MAO_MAX_ACTIVE_RUNS).
            "priority": priority,
            "created_by": self.instance,
            "created_at": self.clock.now().isoformat(),
        }
        await self.book.create(schedule)
        # Here at once (as every instance reads it back: one that does not fit is armed nowhere);
        # the other instances through their watch.
        if (record := records.parse(ScheduleRecord, keys.schedule(schedule_id), 0, schedule)) is not None:
            self._arm(record)
        return schedule

    async def schedule(self, ask: ScheduleRun) -> dict[str, Any]:
        """``POST /pipeline/run`` with a cron and ``scope: "federation"``: ``add`` with the ask's policies."""
        return await self.add(
            ask.name,
            ask.cron,
            ask.timezone,
            ask.placement,
            overlap=ask.overlap,
            catchup=ask.catchup,
            catchup_window=ask.catchup_window,
            priority=ask.priority,
        )

    async def remove(self, schedule_id: str) -> bool:
        deleted = await self.book.delete(schedule_id)
        self._disarm(schedule_id)
        return deleted

    async def schedules(self) -> list[dict[str, Any]]:
        schedules = await self.book.all()
        next_runs = self.scheduler.next_run_times()
        ticks = await asyncio.gather(
            *(
                self.book.recent_fires(s.id) if s.trigger is not None else self.book.recent_ticks(s.id)
                for s in schedules
            )
        )
        return [listed(s, next_runs.get(s.id), recent) for s, recent in zip(schedules, ticks, strict=True)]

    # -- keeping APScheduler in step with etcd --------------------------------------------------
    async def _keep_in_step(self) -> None:
        async def on_list(values: list[KeyValue], _revision: int) -> None:
            found = (self.book.check(kv.key, kv.mod_revision, kv.value) for kv in values)
            schedules = [s for s in found if s is not None]
            self._reconcile(schedules)
            if not self._caught_up:  # the first list after start: ticks missed while nobody was up
                self._caught_up = True
                self._spawn(catch_up_all(self, schedules), "federation catch-up")

        async def on_event(event: WatchEvent) -> None:
            self._apply(event)

        # relist: the whole set is reconciled at every resync, so a schedule armed by mistake goes too.
        watch = PrefixWatch(
            self.etcd,
            keys.SCHEDULES,
            on_list=on_list,
            on_event=on_event,
            what="federation schedules",
            resync_every=RESYNC_EVERY,
            relist=True,
        )
        await watch.run()

    def _reconcile(self, schedules: list[ScheduleRecord]) -> None:
        for schedule in schedules:
            self._arm(schedule)
        current = {s.id for s in schedules}
        for schedule_id in [i for i in self._armed if i not in current]:
            self._disarm(schedule_id)

    def _apply(self, event: WatchEvent) -> None:
        """A schedule written or changed is armed if it is one this instance may act on
        (``ScheduleBook.check``: its shape, and that its ``created_by`` wrote it), else disarmed;
        a deleted one is disarmed."""
        if event.kind == "PUT":
            schedule = self.book.check(event.key, event.revision, event.value)
            if schedule is not None:
                self._arm(schedule)
                return
        self._disarm(keys.last_segment(event.key))

    def _arm(self, schedule: ScheduleRecord) -> None:
        if schedule.trigger is not None:
            return  # a data trigger: fired by ``triggers`` at each ground-truth advance, not by a clock
        spec = (schedule.cron, schedule.timezone)
        if self._armed.get(schedule.id) == spec:
            return
        try:
            self.scheduler.arm(schedule.id, *spec, self._tick, schedule.id)
        except BadRequest as exc:
            log.error("federation schedule %s cannot be armed here: %s", schedule.id, exc.message)
            return
        self._armed[schedule.id] = spec
        log.info(
            "federation schedule %s of %s (%r, %s, placement %s) armed on this instance",
            schedule.id,
            schedule.pipeline,
            spec[0],
            spec[1],
            schedule.placement.labels or "any instance",
        )

    def _disarm(self, schedule_id: str) -> None:
        if self._armed.pop(schedule_id, None) is not None:
            self.scheduler.forget(schedule_id)
            log.info("federation schedule %s is gone: disarmed on this instance", schedule_id)

    # -- one tick -------------------------------------------------------------------------------
    async def _tick(self, schedule_id: str) -> None:
        due = self.clock.now()
        try:
            schedule = await self.book.get(schedule_id)
            if schedule is None:
                self._disarm(schedule_id)
                return
            due = self.clock.due(schedule.cron, schedule.timezone, due)
            if await self.eligible(schedule):
                await self._compete(schedule, due)
            else:
                await self._observe(schedule, due)
        except EtcdUnavailable as exc:
            log.warning(
                "tick of federation schedule %s at %s not fired: etcd is unreachable, so no instance can "
                "claim it (%s)",
                schedule_id,
                due.isoformat(),
                exc.message,
            )
        except MaoError as exc:
            log.warning(
                "tick of federation schedule %s at %s failed: %s", schedule_id, due.isoformat(), exc.message
            )

    async def eligible(self, schedule: ScheduleRecord) -> bool:
        if not labels_match(self.labels, schedule.placement):
            return False
        return await self.store.get_pipeline(schedule.pipeline) is not None

    async def _compete(self, schedule: ScheduleRecord, due: datetime) -> None:
        schedule_id, pipeline = schedule.id, schedule.pipeline
        claim = {"outcome": TickOutcome.CLAIMED, "instance": self.instance}
        if not await self.book.claim(schedule_id, due, claim):
            log.debug("tick %s of %s went to another instance", due.isoformat(), pipeline)
            self.metrics.tick("federation", "lost")
            return
        await self.decide(schedule, due)

    async def decide(self, schedule: ScheduleRecord, due: datetime, why: str | None = None) -> str | None:
        """Ask the door for the run of a tick this instance claimed and record its decision; the
        run's id when one started. ``why``: a catch-up's reason, kept with the fired tick."""
        schedule_id, pipeline = schedule.id, schedule.pipeline
        cause = (
            FederationTick(schedule_id, due) if why is None else CatchUp(schedule_id, due, federation=True)
        )

        async def elsewhere() -> RunElsewhere | None:
            return await running_elsewhere(
                self.book, lambda: self.membership.live(), self.instance, schedule.id
            )

        ask = RunAsk(
            pipeline,
            cause,
            overlap=schedule.overlap or "skip",
            priority=schedule.priority or 0,
            elsewhere=elsewhere,
        )
        # The tick is ours, and nobody else will fire it: from here on it gets an outcome, whatever fails.
        record: dict[str, Any] = {"instance": self.instance}
        reason: str | None = None
        try:
            decision = await self.door.request_run(ask)
            if isinstance(decision, Refused):  # e.g. etcd or the database away while deciding
                reason = decision.error.message
            elif isinstance(decision, Skipped):
                reason = decision.reason
            else:
                record.update(outcome=TickOutcome.FIRED, run_id=decision.run_id, reason=why)
        except MaoError as exc:
            reason = exc.message
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the tick claimed for good
            log.exception("tick %s of federation schedule %s failed", due.isoformat(), schedule_id)
            reason = f"internal error: {exc}"
        if reason is not None:
            record.update(outcome=TickOutcome.SKIPPED, reason=reason)
        lag = (self.clock.now() - due).total_seconds() if reason is None else None
        self.metrics.tick("federation", record["outcome"], lag=lag)
        log.info(
            "tick %s of federation schedule %s (%s) won by this instance: %s",
            due.isoformat(),
            schedule_id,
            pipeline,
            f"fired run {record['run_id']}" if reason is None else f"skipped, {reason}",
        )
        self._spawn(self._report(schedule, due, record), f"report tick {schedule_id}")
        return record.get("run_id")

    async def _observe(self, schedule: ScheduleRecord, due: datetime) -> None:
        """Not eligible: record the tick as skipped only when no live instance could fire it."""
        await asyncio.sleep(OBSERVER_DELAY)
        if await self.book.tick(schedule.id, due) is not None:
            return
        pipeline = schedule.pipeline
        registration = await self.registry.pipeline(pipeline)
        holders = set(registration.get("instances", [])) if registration else set()
        live = {m["name"]: m for m in await self.membership.live()}
        if any(
            name in live and labels_match(live[name].get("labels") or {}, schedule.placement)
            for name in holders
        ):
            return  # they race for it; a tick all of them miss is recorded by the next tick
        dead = sorted(holders - set(live))
        if not dead:
            reason = f"pipeline {pipeline} is not initialised on any eligible instance"
        else:
            verb = "is" if len(dead) == 1 else "are"
            reason = f"no eligible instance was alive ({pipeline} is on {', '.join(dead)}, which {verb} down)"
        record = {
            "outcome": TickOutcome.SKIPPED,
            "instance": None,
            "reason": reason,
            "recorded_by": self.instance,
        }
        if await self.book.claim(schedule.id, due, record):
            log.info("tick %s of federation schedule %s skipped: %s", due.isoformat(), schedule.id, reason)
            self.metrics.tick("federation", TickOutcome.SKIPPED)
            await record_gaps(self, schedule, due)

    async def _report(self, schedule: ScheduleRecord, due: datetime, record: dict[str, Any]) -> None:
        """Write the tick's outcome (retried while etcd is away), record the earlier ticks nobody
        recorded, then (for a run) write how the run ended."""
        schedule_id = schedule.id
        await self._write(schedule_id, due, record)
        await record_gaps(self, schedule, due)
        run_id = record.get("run_id")
        if run_id is None:
            return
        await self.door.wait(run_id)
        try:
            run = await self.store.get_run(run_id)
            status = run.status.value if run else "unknown"
        except MaoError as exc:  # the database is away: the run has ended, how is not known
            log.warning(
                "run %s (tick %s of federation schedule %s) ended, but how is unknown: %s",
                run_id,
                due.isoformat(),
                schedule_id,
                exc.message,
            )
            status = "unknown"
        await self._write(schedule_id, due, {**record, "run_status": status})

    async def _write(self, schedule_id: str, due: datetime, record: dict[str, Any]) -> None:
        """Write a tick's record, retried while etcd is away (1 s doubling up to 30 s: this instance's
        own write, no herd to spread)."""
        await persist(
            lambda: self.book.record(schedule_id, due, record),
            Backoff(1.0, WRITE_RETRY_CAP, jitter=False),
            (EtcdUnavailable,),
            lambda _error, _wait: None,
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        spawn(coroutine, name, self._tasks)
