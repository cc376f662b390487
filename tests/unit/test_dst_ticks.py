"""The daylight-saving rule in Europe/Zurich, for the tick computation and for both schedulers (with a
fake clock): a local time skipped by the spring-forward fires once at the first valid instant after
it; a local time repeated by the fall-back fires once, at its first occurrence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import BadRequest
from orchestrator.federation.records import ScheduleRecord
from orchestrator.scheduling.cron import Scheduler
from orchestrator.scheduling.federation import FederationScheduler
from orchestrator.scheduling.ticks import CLOCK, Clock, due_time, fire_times, make_trigger
from orchestrator.store import Store
from tests.unit.memory_door import MemoryDoor
from tests.unit.scheduling_stand_ins import store_with_pipeline

ZURICH = "Europe/Zurich"
# 2026: clocks go 02:00 -> 03:00 on 29 March (01:00 UTC) and 03:00 -> 02:00 on 25 October (01:00 UTC).
SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
FALL = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(cron: str, start: datetime, hours: int) -> list[datetime]:
    return fire_times(make_trigger(cron, ZURICH), start, start + timedelta(hours=hours))


def test_a_skipped_local_time_fires_once_at_the_first_valid_instant_after_it() -> None:
    # 02:30 does not exist on 29 March: it fires at 03:00 CEST (01:00 UTC), once; then 02:30 CEST again.
    assert ticks("30 2 * * *", utc(2026, 3, 28, 12), 48) == [SPRING, utc(2026, 3, 30, 0, 30)]


def test_several_skipped_times_fire_once_together() -> None:
    # 02:00, 02:15, 02:30, 02:45 and 03:00 local all land on the jump: one tick there.
    got = ticks("*/15 * * * *", utc(2026, 3, 29, 0, 30), 1)
    assert got == [utc(2026, 3, 29, 0, 45), SPRING, utc(2026, 3, 29, 1, 15), utc(2026, 3, 29, 1, 30)]


def test_a_repeated_local_time_fires_once_at_its_first_occurrence() -> None:
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET): only the first fires.
    assert ticks("30 2 * * *", utc(2026, 10, 24, 12), 48) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    hourly = ticks("0 * * * *", utc(2026, 10, 24, 23, 30), 4)
    # 02:00 CEST (00:00 UTC) fires; 02:00 CET (01:00 UTC) is its repetition; 03:00 CET is 02:00 UTC.
    assert hourly == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]


def test_the_armed_trigger_and_due_time_follow_the_rule() -> None:
    trigger = make_trigger("30 2 * * *", ZURICH)
    assert trigger.get_next_fire_time(None, utc(2026, 3, 28, 12)) == SPRING
    assert trigger.get_next_fire_time(SPRING, SPRING + timedelta(seconds=1)) == utc(2026, 3, 30, 0, 30)
    assert due_time(trigger, SPRING + timedelta(milliseconds=5)) == SPRING
    # In the repeated hour's second pass, the next tick is the next day's.
    assert trigger.get_next_fire_time(None, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_a_cron_that_can_never_fire_is_a_400(cron: str) -> None:
    with pytest.raises(BadRequest) as caught:
        make_trigger(cron)
    assert caught.value.code == "invalid_cron" and "never fires" in caught.value.message


def test_29_february_is_a_cron_that_fires() -> None:
    assert fire_times(make_trigger("0 0 29 2 *"), utc(2026, 1, 1), utc(2029, 1, 1)) == [utc(2028, 2, 29)]


# -- both schedulers, with a fake clock ----------------------------------------------------------------
@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_with_pipeline(tmp_path) as store:
        yield store


async def test_local_schedule_ticks_at_the_spring_forward(store: Store) -> None:
    clock, door = Clock.fixed(SPRING + timedelta(milliseconds=20)), MemoryDoor()
    scheduler = Scheduler(store, door, clock=clock)
    schedule = await scheduler.add("p", "30 2 * * *", ZURICH)
    await scheduler._tick(schedule.id)
    (tick,) = await store.list_ticks(schedule.id)
    assert tick.outcome == "fired" and tick.due_at == SPRING
    assert door.started[0].tick_at == SPRING


async def test_local_schedule_fires_the_repeated_hour_once(store: Store) -> None:
    clock = Clock.fixed(utc(2026, 10, 25, 0, 30))
    scheduler = Scheduler(store, MemoryDoor(), clock=clock)
    schedule = await scheduler.add("p", "30 2 * * *", ZURICH)
    trigger = make_trigger("30 2 * * *", ZURICH)
    # APScheduler asks for the next fire time after each tick: never the second 02:30.
    assert trigger.get_next_fire_time(clock.now(), clock.now() + timedelta(seconds=1)) == utc(2026, 10, 26, 1, 30)
    await scheduler._tick(schedule.id)
    (tick,) = await store.list_ticks(schedule.id)
    assert tick.due_at == utc(2026, 10, 25, 0, 30)


FED1 = "fed1" * 8  # a federation schedule's id (32 hex digits)


class FakeBook:
    """The federation's tick records, in memory: ``claim`` is a compare-and-create."""

    def __init__(self, schedule: dict[str, Any]) -> None:
        self.schedule = ScheduleRecord.model_validate(schedule)
        self.ticks: dict[datetime, dict[str, Any]] = {}

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        return self.schedule if schedule_id == self.schedule.id else None

    async def claim(self, schedule_id: str, due: datetime, record: dict[str, Any]) -> bool:
        if due in self.ticks:
            return False
        self.ticks[due] = dict(record)
        return True

    async def record(self, schedule_id: str, due: datetime, record: dict[str, Any]) -> None:
        self.ticks[due] = dict(record)

    async def tick(self, schedule_id: str, due: datetime) -> dict[str, Any] | None:
        return self.ticks.get(due)

    async def recent_ticks(self, schedule_id: str, limit: int = 20) -> list[dict[str, Any]]:
        return [self.ticks[d] for d in sorted(self.ticks, reverse=True)][:limit]

    async def last_tick_before(self, schedule_id: str, due: datetime) -> datetime | None:
        earlier = [d for d in self.ticks if d < due]
        return max(earlier) if earlier else None


async def federation_tick(store: Store, now: datetime, cron: str) -> tuple[FakeBook, MemoryDoor]:
    schedule = {
        "id": FED1,
        "pipeline": "p",
        "cron": cron,
        "timezone": ZURICH,
        "placement": {"labels": {}},
        "created_by": "here",
        "created_at": (now - timedelta(hours=12)).isoformat(),
    }
    door, book = MemoryDoor(), FakeBook(schedule)
    settings = SimpleNamespace(instance_name="here", labels={})
    local = Scheduler(store, door)
    federation = FederationScheduler(
        settings,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        local,
        door,
        store,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        clock=Clock.fixed(now),
    )
    federation.book = book  # type: ignore[assignment]
    await federation._tick(FED1)
    await asyncio.gather(*federation._tasks)  # the outcome's report
    await federation.close()
    return book, door


async def test_federation_schedule_ticks_at_the_spring_forward(store: Store) -> None:
    book, door = await federation_tick(store, SPRING + timedelta(milliseconds=20), "30 2 * * *")
    # 02:30 fired once, at 03:00 local, with the run standing for that instant.
    assert set(book.ticks) == {SPRING} and book.ticks[SPRING]["outcome"] == "fired"
    assert len(door.started) == 1


async def test_federation_schedule_fires_the_repeated_hour_once(store: Store) -> None:
    first = utc(2026, 10, 25, 0, 30)
    book, door = await federation_tick(store, first + timedelta(milliseconds=20), "30 2 * * *")
    assert set(book.ticks) == {first} and book.ticks[first]["outcome"] == "fired"
    assert len(door.started) == 1
    # At the second 02:30 (01:30 UTC) APScheduler does not fire: the trigger's next tick is the next day.
    trigger = make_trigger("30 2 * * *", ZURICH)
    assert trigger.next_after(first) == utc(2026, 10, 26, 1, 30)


# -- the ends of the calendar --------------------------------------------------------------------
_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_anywhere = st.one_of(
    st.datetimes(timezones=_offsets),
    st.datetimes(min_value=datetime(9999, 12, 29), timezones=_offsets),
    st.datetimes(max_value=datetime(1, 1, 3), timezones=_offsets),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    after=_anywhere,
    span=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    cron=st.sampled_from(["* * * * *", "0 * * * *", "0 0 * * *", "0 0 1 1 *", "30 2 * * 0"]),
    zone=st.sampled_from(
        ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Zurich", "Asia/Kathmandu"]
    ),
)
def test_a_walk_off_the_calendar_ends_the_ticks_instead_of_raising(
    after: datetime, span: timedelta, cron: str, zone: str
) -> None:
    """Any instant, its first and last days included: the ticks are those Python's calendar holds,
    in order, and a walk past its end finds no more of them (no OverflowError)."""
    trigger = make_trigger(cron, zone)
    moment = trigger.next_after(after)
    assert moment is None or moment > after
    try:
        until = after + span
    except OverflowError:
        until = datetime.max.replace(tzinfo=UTC)
    ticks = fire_times(trigger, after, until, limit=50)
    assert ticks == sorted(ticks) and all(after < t <= until for t in ticks)


async def test_both_schedulers_read_one_clock(store: Store) -> None:
    """The instance's scheduler and the federation's read the same clock (``ticks.CLOCK``) unless a
    test gives them another: a tick's due time is decided the same way by both."""
    settings = SimpleNamespace(instance_name="here", labels={})
    local = Scheduler(store, MemoryDoor())
    federation = FederationScheduler(
        settings,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        local,
        MemoryDoor(),
        store,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    assert local.clock is federation.clock is CLOCK
    fixed = Clock.fixed(utc(2026, 3, 29, 1, 0, 0, 400_000))
    assert fixed.due("30 2 * * *", ZURICH) == SPRING
    assert due_time(make_trigger("30 2 * * *", ZURICH), fixed.now()) == SPRING
