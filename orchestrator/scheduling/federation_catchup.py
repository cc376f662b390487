"""Catch-up of a federation-wide schedule: the ticks no instance recorded because the whole federation
(or etcd) was down, decided once federation-wide by the first eligible instance to come back.

At its start (the first list of schedules), each eligible instance looks at each schedule's ticks
since its newest recorded tick (at most ``HORIZON`` back: tick records live 7 days) up to now. Ticks
without a record were seen by nobody: a live eligible instance claims every tick, and an observer
records the ones no live instance could fire. The schedule's ``catchup`` (``none``, ``latest``,
``all``) and ``catchup_window`` decide about them as for an instance schedule (``scheduling.catchup``).

Exactly once federation-wide: the decision is a compare-and-swap on ``/mao/v1/catchups/<id>``
(``{until, instance, catchup, ticks, decided_at}``). An instance computes the gap after the
``until`` it read, and only the one whose swap lands applies it; one that loses reads again (the gap
is then covered, or a later one). Each decided tick is then created with the same compare-and-create
as a live tick's claim: ``missed`` with its reason, or ``claimed`` for a tick to run; a tick that
some other instance recorded meanwhile (its live tick's winner recording gaps) is left to that
record. The runs go through the tick's usual path (``FederationScheduler.decide``), one at a time
for ``all``, each recorded ``fired`` with "catch-up i of n" and ``tick_at`` the tick it stands for.

A schedule record without ``catchup`` (written by an older version) has no catch-up: the next tick's
winner records its gaps as skipped, as before.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ..domain.states import TickOutcome
from ..errors import MaoError
from ..federation import keys
from ..federation.etcd import Etcd
from ..federation.records import ScheduleRecord
from ..metrics import Metrics
from . import catchup
from .book import ScheduleBook
from .ticks import DUE_JITTER, Clock, fire_times, make_trigger

if TYPE_CHECKING:
    from ..runs.door import Door


class FederationScheduler(Protocol):
    """What a catch-up needs of the federation scheduler (``scheduler.FederationScheduler``), which
    calls in here; named here so that this module does not import it back."""

    clock: Clock
    instance: str
    etcd: Etcd
    book: ScheduleBook
    door: Door
    metrics: Metrics

    async def eligible(self, schedule: ScheduleRecord) -> bool: ...

    async def decide(self, schedule: ScheduleRecord, due: datetime, why: str | None = None) -> str | None: ...

log = logging.getLogger(__name__)

HORIZON = timedelta(days=7)  # tick records live this long (schedules.TICK_HISTORY_TTL)
MAX_ENUMERATED = 50_000
MAX_GAP_RECORDS = 100
NOBODY_ALIVE = "no eligible instance was alive (or able to reach etcd) to fire it"
SWAP_ATTEMPTS = 5


async def catch_up_all(fs: FederationScheduler, schedules: list[ScheduleRecord]) -> None:
    """Catch up every schedule this instance is eligible for, side by side (an ``all`` catch-up
    waits for each of its runs); one failing does not stop the others."""
    await asyncio.gather(
        *(
            _catch_up_one(fs, schedule)
            for schedule in schedules
            if schedule.trigger is None and schedule.catchup
        )
    )


async def _catch_up_one(fs: FederationScheduler, schedule: ScheduleRecord) -> None:
    try:
        if await fs.eligible(schedule):
            await catch_up(fs, schedule)
    except Exception as exc:  # noqa: BLE001 - the next tick's winner records the gap as skipped
        log.warning(
            "federation schedule %s: catch-up not done: %s",
            schedule.id,
            getattr(exc, "message", exc),
            exc_info=not isinstance(exc, MaoError),
        )


async def catch_up(fs: FederationScheduler, schedule: ScheduleRecord) -> list[str]:
    """Decide (if nobody did) and apply the catch-up of one schedule; the ids of the runs started."""
    schedule_id, pipeline = schedule.id, schedule.pipeline
    now = fs.clock.now()
    decision = await _decide(fs, schedule, now)
    if decision is None:
        return []
    missed, earlier = decision
    policy = schedule.catchup or "latest"
    wording = catchup.Wording(
        down="the whole federation was down (no instance recorded the tick)",
        started=f"{fs.instance} came back",
    )
    decided = catchup.plan(missed, policy, schedule.catchup_window, now, earlier, wording)
    record: dict[str, Any] = {"outcome": TickOutcome.MISSED, "instance": None, "recorded_by": fs.instance}
    recorded = 0
    for tick, reason in decided.missed:
        if await fs.book.claim(schedule_id, tick, {**record, "reason": reason}):
            recorded += 1
            fs.metrics.tick("federation", TickOutcome.MISSED)
    # Every tick to run is claimed before the first runs: nobody records it as a gap meanwhile.
    count = len(decided.run)
    turns = []
    for number, tick in enumerate(decided.run, start=1):
        why = (
            f"catch-up {number} of {count} (catchup 'all')"
            if policy == "all"
            else f"catch-up for ticks missed since {missed[0].isoformat()} (the federation was down)"
        )
        claim = {
            "outcome": TickOutcome.CLAIMED,
            "instance": fs.instance,
            "reason": f"{why}: waiting for its turn",
        }
        if await fs.book.claim(schedule_id, tick, claim):
            turns.append((tick, why))
    log.info(
        "federation schedule %s of %s: %d tick(s) nobody recorded; %d recorded missed, %d to run here "
        "(catchup %r)",
        schedule_id,
        pipeline,
        len(missed),
        recorded,
        len(turns),
        policy,
    )
    started = []
    for tick, why in turns:
        run_id = await fs.decide(schedule, tick, why)
        if run_id is not None:
            started.append(run_id)
            await fs.door.wait(run_id)  # one at a time
    return started


async def _decide(
    fs: FederationScheduler, schedule: ScheduleRecord, now: datetime
) -> tuple[list[datetime], int] | None:
    """The gap this instance won the right to decide about: (ticks, earlier ticks not listed); None
    when there is none or another instance decided it."""
    schedule_id = schedule.id
    trigger = make_trigger(schedule.cron, schedule.timezone)
    until = now - DUE_JITTER  # a tick due now belongs to the live race
    key = keys.catchup(schedule_id)
    for _ in range(SWAP_ATTEMPTS):
        current = await fs.etcd.get(key)
        since = datetime.fromisoformat(schedule.created_at)
        if (decided := _until(current.value if current is not None else None)) is not None:
            since = max(since, decided)
        last = await fs.book.last_tick_before(schedule_id, until + DUE_JITTER)
        since = max(since, last or since)
        horizon = max(since, now - HORIZON)
        missed = fire_times(trigger, horizon, until, limit=MAX_ENUMERATED)
        if not missed:
            return None
        earlier = len(fire_times(trigger, since, horizon, limit=MAX_ENUMERATED)) if horizon > since else 0
        decision = {
            "until": missed[-1].astimezone(UTC).isoformat(),
            "instance": fs.instance,
            "catchup": schedule.catchup,
            "ticks": len(missed) + earlier,
            "decided_at": now.astimezone(UTC).isoformat(),
        }
        if current is None:
            won = await fs.etcd.create(key, decision)
        else:
            won = await fs.etcd.put_if(key, decision, current.mod_revision)
        if won:
            return missed, earlier
    log.info("federation schedule %s: its catch-up was decided by other instances", schedule_id)
    return None


def _until(decision: Any) -> datetime | None:
    """How far an earlier catch-up decided, if the record says so readably (a record that does not
    is replaced by this decision's compare-and-swap)."""
    until = decision.get("until") if isinstance(decision, dict) else None
    try:
        moment = datetime.fromisoformat(until) if isinstance(until, str) and len(until) <= 64 else None
    except ValueError:
        return None
    return moment if moment is not None and moment.utcoffset() is not None else None


async def record_gaps(fs: FederationScheduler, schedule: ScheduleRecord, due: datetime) -> None:
    """Record as skipped the ticks before ``due`` that nobody recorded, as far as etcd lets us
    (called once the tick at ``due`` has its outcome: it waits for none of this)."""
    try:
        await _record_missed(fs, schedule, due)
    except Exception as exc:  # noqa: BLE001 - best effort: the run's end is still to be written
        log.warning(
            "federation schedule %s: the ticks before %s that have no record stay without one: %s",
            schedule.id,
            due.isoformat(),
            getattr(exc, "message", exc),
            exc_info=not isinstance(exc, MaoError),
        )


async def _record_missed(fs: FederationScheduler, schedule: ScheduleRecord, due: datetime) -> None:
    schedule_id = schedule.id
    since = datetime.fromisoformat(schedule.created_at)
    last = await fs.book.last_tick_before(schedule_id, due)
    since = max(since, last or since, due - timedelta(days=7))
    trigger = make_trigger(schedule.cron, schedule.timezone)
    missed = fire_times(trigger, since, due - timedelta(seconds=1), limit=100_000)[-MAX_GAP_RECORDS:]
    record = {
        "outcome": TickOutcome.SKIPPED,
        "instance": None,
        "reason": NOBODY_ALIVE,
        "recorded_by": fs.instance,
    }
    for moment in missed:
        if await fs.book.claim(schedule_id, moment, record):
            fs.metrics.tick("federation", TickOutcome.MISSED)
    if missed:
        log.warning(
            "federation schedule %s: %d tick(s) since %s have no record; recorded as skipped (%s)",
            schedule_id,
            len(missed),
            missed[0].isoformat(),
            NOBODY_ALIVE,
        )
