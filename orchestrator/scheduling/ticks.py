"""When a cron schedule ticks: the one place that turns a cron expression and a time zone into instants,
and the one clock the schedulers read.

Both schedulers (this instance's, ``cron``, and the federation's, ``federation``)
arm ``CronTicks``, read the time from one ``Clock`` (``CLOCK``; a test gives them another) and ask it
which fire time a tick stands for (``Clock.due``); backfill and catch-up enumerate ticks with
``fire_times``, so every part of the orchestrator agrees on which instants a schedule stands for.

The daylight-saving rule (docs/schedules.md): a cron expression names local wall-clock times in the
schedule's zone.
- A local time that a spring-forward skips (02:30 in Europe/Zurich on the last Sunday of March) fires
  once, at the first valid instant after it (03:00 local, the moment the clocks jump). Several skipped
  times (``*/15`` between 02:00 and 03:00) fire once together there; a tick due at that very instant
  anyway is the same tick.
- A local time that a fall-back repeats (02:30 on the last Sunday of October) fires once, at its first
  occurrence (summer time).

Wall-clock matching uses APScheduler's ``CronTrigger`` in UTC (a zone without transitions, so it
walks naive local times one by one); each match is then placed in the real zone by the rule above.
An expression means what crontab(5) says, not what APScheduler's own syntax would: a numeric weekday
counts from Sunday (0 or 7; APScheduler counts from Monday), and when both day of month and day of week
are restricted a day matches either (APScheduler requires both) (``standard_cron``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from ..errors import BadRequest

# Transitions move clocks by at most a few hours (2 h in a few historical zones); searching this far
# back in wall-clock time finds every local time that lands after a given instant.
_MAX_SHIFT = timedelta(hours=3)
# A cron that never fires within this span never fires at all: the Gregorian calendar repeats its
# weekdays every 400 years, but any day/month/weekday combination that exists at all recurs in 28
# years (29 February on a given weekday included) outside century years.
_HORIZON = timedelta(days=366 * 29)
_EPSILON = timedelta(microseconds=1)
# Instants remembered per trigger (a catch-up or backfill walk may pass through many more).
_MEMO_SIZE = 512
_UNKNOWN = object()


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; BadRequest (400) naming it otherwise."""
    if not isinstance(name, str):
        raise BadRequest(
            "timezone must be a string such as 'UTC' or 'Europe/Zurich'", code="invalid_timezone"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(
            f"unknown timezone {name!r} (use an IANA name such as 'Europe/Zurich')", code="invalid_timezone"
        ) from None


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday_number(text: str) -> int:
    name = text.lower()
    if name in _WEEKDAYS:
        return _WEEKDAYS.index(name)
    if not text.isdigit() or int(text) > 7:
        raise ValueError(f"invalid day of week {text!r} (0-7 or sun-sat)")
    return int(text) % 7  # 7 is Sunday too


def _weekdays(field: str) -> list[str]:
    """crontab(5)'s day-of-week field as APScheduler weekday names (``1-5`` -> mon..fri)."""
    days: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        if step_text and not step_text.isdigit() or step_text == "0":
            raise ValueError(f"invalid step in day of week {item!r}")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, _, high = span.partition("-")
            first, last = _weekday_number(low), _weekday_number(high)
            if high == "7":
                last = 7  # 5-7: Friday to Sunday
            if last < first:
                raise ValueError(f"invalid range in day of week {item!r}")
        else:
            first = _weekday_number(span)
            last = 6 if step_text else first
        days.update(day % 7 for day in range(first, last + 1, step))
    return [_WEEKDAYS[day] for day in sorted(days)]


def standard_cron(expression: str) -> BaseTrigger:
    """A 5-field crontab(5) expression as an APScheduler trigger in UTC (module docstring); ValueError
    saying what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields

    def cron(day: str, weekday: str) -> CronTrigger:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=UTC
        )

    names = "*" if weekday == "*" else ",".join(_weekdays(weekday))
    # crontab(5): a field that starts with '*' is unrestricted for this rule, even '*/2'.
    if day.startswith("*") or weekday.startswith("*"):
        return cron(day, names)
    return OrTrigger([cron(day, "*"), cron("*", names)])


# APScheduler 3 ships no type information (BaseTrigger is Any to mypy) and takes as a trigger only a
# BaseTrigger instance, so the subclass stays; its own methods below are typed.
class CronTicks(BaseTrigger):  # type: ignore[misc]
    """The instants of a 5-field cron expression in a time zone, by the daylight-saving rule above.

    Works as an APScheduler trigger (``get_next_fire_time``); ``next_after`` is the plain form."""

    def __init__(self, cron: str, timezone: str = "UTC") -> None:
        if not isinstance(cron, str) or not cron.strip():
            raise BadRequest(
                "cron must be a 5-field cron expression such as '*/15 * * * *'", code="invalid_cron"
            )
        self.cron = cron.strip()
        self.zone: tzinfo = zone(timezone)
        self.timezone = timezone
        try:
            # Naive wall-clock times, walked in UTC because UTC has no transitions.
            self._wall = standard_cron(self.cron)
        except ValueError as exc:
            raise BadRequest(f"invalid cron expression {cron!r}: {exc}", code="invalid_cron") from None
        self._memo: dict[datetime, datetime | None] = {}
        start = datetime(2000, 1, 1, tzinfo=UTC)
        first = self._wall.get_next_fire_time(None, start)
        if first is None or first - start > _HORIZON:
            raise BadRequest(
                f"cron expression {cron!r} never fires (no such date in any year)", code="invalid_cron"
            )

    def __str__(self) -> str:
        return f"cron[{self.cron!r} in {self.timezone}]"

    def next_after(self, after: datetime) -> datetime | None:
        """The first tick strictly after ``after`` (an aware datetime), in UTC."""
        try:
            after = after.astimezone(UTC)
        except OverflowError:  # an instant whose UTC reading lies before year 1 or after 9999
            return None
        # Remembered: the schedules sharing this trigger (``make_trigger``) all ask for the same
        # instants when they tick together, and APScheduler asks again for each job.
        if (known := self._memo.get(after, _UNKNOWN)) is not _UNKNOWN:
            return known  # type: ignore[return-value]
        try:
            moment = self._next_after(after)
        except OverflowError:
            # The walk ran off the calendar (year 9999, or year 1 looking back): nothing fires there.
            moment = None
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[after] = moment
        return moment

    def _next_after(self, after: datetime) -> datetime | None:
        local = after.astimezone(self.zone).replace(tzinfo=None)
        # Near a transition, wall-clock times before ``local`` can map to instants after ``after``
        # (a skipped time moved forward, or ``after`` in the second pass of a repeated hour).
        if self.zone.utcoffset(after - _MAX_SHIFT) != self.zone.utcoffset(after + _MAX_SHIFT):
            local -= _MAX_SHIFT
        candidate = self._wall.get_next_fire_time(None, (local + _EPSILON).replace(tzinfo=UTC))
        while candidate is not None:
            moment = self.place(candidate.replace(tzinfo=None))
            if moment > after:
                return moment
            candidate = self._wall.get_next_fire_time(candidate, candidate + _EPSILON)
        return None

    def place(self, wall: datetime) -> datetime:
        """The instant (UTC) at which the naive local time ``wall`` fires: its first occurrence, or
        for a time skipped by a spring-forward the first valid instant after it."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        instant = first.astimezone(UTC)
        if instant.astimezone(self.zone).replace(tzinfo=None) == wall:
            return instant  # exists (for a repeated time, fold=0 is the first occurrence)
        # In a gap: the transition lies between the two readings of ``wall``; find it to the second.
        low = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        high = instant
        low, high = min(low, high), max(low, high)
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(self.zone).utcoffset() == low.astimezone(self.zone).utcoffset():
                low = middle
            else:
                high = middle
        return high.replace(microsecond=0)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # As APScheduler's CronTrigger: after the previous fire time (the scheduler decides about a
        # misfire), or from ``now`` on for a new job.
        after = min(previous_fire_time, now - _EPSILON) if previous_fire_time else now - _EPSILON
        return self.next_after(after)


def make_trigger(cron: str, timezone: str = "UTC") -> CronTicks:
    """A 5-field cron schedule; BadRequest (400) naming what is wrong (also: a cron that never fires).

    Schedules with the same cron and zone share one (immutable) trigger, so a burst of them computes
    each instant once (bench/schedules_bench.py)."""
    if not isinstance(cron, str) or not isinstance(timezone, str):
        return CronTicks(cron, timezone)  # raises the 400
    return _shared_trigger(cron.strip(), timezone)


@functools.lru_cache(maxsize=1024)
def _shared_trigger(cron: str, timezone: str) -> CronTicks:
    return CronTicks(cron, timezone)


def fire_times(trigger: CronTicks, after: datetime, until: datetime, limit: int = 1000) -> list[datetime]:
    """The trigger's fire times in (after, until], at most ``limit`` of them (the earliest)."""
    times: list[datetime] = []
    moment = trigger.next_after(after)
    while moment is not None and moment <= until and len(times) < limit:
        times.append(moment)
        moment = trigger.next_after(moment)
    return times


def next_ticks(cron: str, timezone: str, now: datetime, count: int) -> list[datetime]:
    """The schedule's next ``count`` ticks after ``now`` (for listings: the console's schedules page).
    Schedules with the same cron and zone share the trigger and its remembered instants."""
    trigger = make_trigger(cron, timezone)
    times: list[datetime] = []
    moment = trigger.next_after(now)
    while moment is not None and len(times) < count:
        times.append(moment)
        moment = trigger.next_after(moment)
    return times


def with_next_ticks(schedules: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Schedule listings with ``next_ticks`` (ISO instants) when ``count`` > 0: a cron schedule's
    next ``count`` ticks from now; a data trigger's none. A stored cron this version cannot read
    (written by another) lists no ticks rather than failing the listing."""
    if count <= 0:
        return schedules
    now = CLOCK.now()
    found: dict[tuple[str, str], list[str]] = {}
    listed = []
    for schedule in schedules:
        cron, timezone = schedule.get("cron") or "", schedule.get("timezone") or "UTC"
        key = (cron, timezone)
        if key not in found:
            try:
                found[key] = [t.isoformat() for t in next_ticks(cron, timezone, now, count)] if cron else []
            except BadRequest:
                found[key] = []
        listed.append({**schedule, "next_ticks": found[key]})
    return listed


# APScheduler fires at (or just after) the due time; a tick that runs a little early (clock jitter)
# still belongs to the fire time it is about to reach.
DUE_JITTER = timedelta(seconds=1)


def due_time(trigger: CronTicks, now: datetime) -> datetime:
    """The fire time a tick running at ``now`` stands for: the latest one in the hour (and up to a
    minute) before ``now + DUE_JITTER``; ``now`` (whole seconds) when there is none (a tick that came
    very late)."""
    # The recent minutes first: a tick on time finds its fire time there without walking the hour.
    for span in (timedelta(minutes=2), timedelta(hours=1)):
        # From a whole minute: the ticks of one moment then ask the trigger the same questions.
        since = (now - span).replace(second=0, microsecond=0)
        moments = fire_times(trigger, since, now + DUE_JITTER, limit=100)
        if moments:
            return moments[-1]
    return now.replace(microsecond=0)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Clock:
    """The schedulers' time: ``now()`` (aware, UTC), and ``due``, the fire time of a schedule's tick
    running at that moment. Both schedulers use ``CLOCK`` unless a test gives them one that reads
    another time (``Clock.fixed``: daylight-saving ticks, catch-ups after a given outage)."""

    def __init__(self, read: Callable[[], datetime] = _utc_now) -> None:
        self._read = read

    @classmethod
    def fixed(cls, instant: datetime) -> Clock:
        return cls(lambda: instant)

    def now(self) -> datetime:
        return self._read()

    def due(self, cron: str, timezone: str, at: datetime | None = None) -> datetime:
        """The fire time a tick of ``cron`` in ``timezone`` running now (or at ``at``) stands for
        (``due_time``); BadRequest for a schedule this version cannot read."""
        return due_time(make_trigger(cron, timezone), self.now() if at is None else at)


CLOCK = Clock()
