"""Catch-up across a stopped instance (none / latest / all, the window), on a real SQLite store with a
door in memory; and the prototype's replace-by-default semantics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.schedule import ScheduleOptions
from orchestrator.scheduling import catchup
from orchestrator.scheduling.cron import Scheduler
from orchestrator.scheduling.ticks import Clock
from orchestrator.store import Store
from orchestrator.store.tables import ScheduleRow
from tests.unit.memory_door import MemoryDoor
from tests.unit.scheduling_stand_ins import store_with_pipeline


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_with_pipeline(tmp_path) as store:
        yield store


NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)  # the fake clock at the restart


async def down_for_an_hour(store: Store, door: MemoryDoor, **options: Any) -> tuple[Scheduler, str]:
    """A */5 schedule whose instance stopped at 11:00:30 and starts again at 12:00:30 (12 ticks missed)."""
    scheduler = Scheduler(store, door, clock=Clock.fixed(NOW))
    schedule = await scheduler.add("p", "*/5 * * * *", options=ScheduleOptions(**options))
    await scheduler.close()
    async with store.session("rewind") as s:
        row = await s.get(ScheduleRow, schedule.id)
        assert row is not None
        row.last_tick_at = NOW - timedelta(hours=1)
    restarted = Scheduler(store, door, clock=Clock.fixed(NOW))
    await restarted.start()
    restarted._scheduler.pause()  # the real clock's ticks have no place in this fake hour
    return restarted, schedule.id


MISSED = [datetime(2026, 6, 1, 11, 5, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(12)]


async def outcomes(store: Store, schedule_id: str) -> list[tuple[datetime, str, str | None]]:
    ticks = await store.list_ticks(schedule_id, limit=1000)
    return [(t.due_at, t.outcome, t.reason) for t in reversed(ticks)]


async def test_catchup_none_runs_nothing_and_records_each_missed_tick(store: Store) -> None:
    door = MemoryDoor(keep_active=True)
    scheduler, schedule_id = await down_for_an_hour(store, door, catchup="none")
    recorded = await outcomes(store, schedule_id)
    assert [t for t, _, _ in recorded] == MISSED
    assert {o for _, o, _ in recorded} == {"missed"} and "catchup 'none'" in str(recorded[0][2])
    assert door.started == []
    await scheduler.close()


async def test_catchup_latest_runs_the_latest_tick_once(store: Store) -> None:
    door = MemoryDoor(keep_active=True)
    scheduler, schedule_id = await down_for_an_hour(store, door)  # latest is the default
    recorded = await outcomes(store, schedule_id)
    assert [t for t, _, _ in recorded] == MISSED
    assert [o for _, o, _ in recorded] == ["missed"] * 11 + ["fired"]
    assert [(r.run_id, r.trigger, r.tick_at) for r in door.started] == [("run1", "cron", MISSED[-1])]
    await scheduler.close()


async def test_catchup_all_runs_every_missed_tick_in_order_one_at_a_time(store: Store) -> None:
    door = MemoryDoor(keep_active=True)
    scheduler, schedule_id = await down_for_an_hour(store, door, catchup="all")
    for expected in range(1, 13):
        for _ in range(200):  # the replay waits for the run, then asks again: give it a moment
            if len(door.started) == expected:
                break
            await asyncio.sleep(0.05)
        assert len(door.started) == expected  # never the next one while this one runs
        await asyncio.sleep(0.3)
        assert len(door.started) == expected
        door.finish()
    assert [r.tick_at for r in door.started] == MISSED
    recorded = await outcomes(store, schedule_id)
    assert [(t, o) for t, o, _ in recorded] == [(t, "fired") for t in MISSED]
    assert recorded[0][2] == "catch-up 1 of 12 (catchup 'all')"
    await scheduler.close()


async def test_ticks_older_than_the_window_are_missed(store: Store) -> None:
    door = MemoryDoor(keep_active=True)
    scheduler, schedule_id = await down_for_an_hour(store, door, catchup="all", catchup_window=1200)
    for expected in range(1, 5):
        for _ in range(200):
            if len(door.started) == expected:
                break
            await asyncio.sleep(0.05)
        door.finish()
    # The last 20 minutes (11:45, 11:50, 11:55, 12:00) run; the 8 before are missed.
    assert [r.tick_at for r in door.started] == MISSED[-4:]
    recorded = await outcomes(store, schedule_id)
    missed = [(t, r) for t, o, r in recorded if o == "missed"]
    assert [t for t, _ in missed] == MISSED[:8] and "catch-up window (1200 s)" in str(missed[0][1])
    await scheduler.close()


async def test_scheduling_again_replaces_unless_add(store: Store) -> None:
    scheduler = Scheduler(store, MemoryDoor(keep_active=True))
    await scheduler.start()
    first = await scheduler.add("p", "*/5 * * * *")
    again = await scheduler.add("p", "0 3 * * *", "Europe/Zurich", options=ScheduleOptions(catchup="none"))
    assert again.id == first.id and again.cron == "0 3 * * *" and again.catchup == "none"
    other = await scheduler.add("p", "0 4 * * *", add=True)
    assert other.id != first.id
    assert sorted(scheduler.next_run_times()) == sorted([first.id, other.id])
    assert sorted(await scheduler.remove_pipeline("p")) == sorted([first.id, other.id])
    assert scheduler.next_run_times() == {} and await store.list_schedules() == []
    await scheduler.close()


def test_plan_summarises_what_it_cannot_list() -> None:
    now = MISSED[-1]
    many = [now - timedelta(minutes=i) for i in range(2000, -1, -1)]
    decided = catchup.plan(many, "none", None, now, earlier=5)
    assert len(decided.missed) == catchup.MAX_RECORDED
    assert decided.missed[0][1].endswith("(and 1006 earlier missed tick(s), not listed one by one)")
    latest = catchup.plan(MISSED, "latest", 600, now)
    assert latest.run == [MISSED[-1]] and [t for t, _ in latest.missed] == MISSED[:-1]


def test_catchup_all_replays_a_bounded_number() -> None:
    now = MISSED[-1]
    many = [now - timedelta(minutes=i) for i in range(1500, -1, -1)]
    decided = catchup.plan(many, "all", None, now)
    assert decided.run == many[-catchup.MAX_REPLAY :] and len(decided.missed) == 501
    assert "1000 latest missed ticks" in decided.missed[0][1]


def _missed_total(scope: str) -> float:
    from orchestrator.metrics import UNSERVED  # what a scheduler counts on without a node

    value = UNSERVED.registry.get_sample_value("mao_ticks_total", {"scope": scope, "outcome": "missed"})
    return value or 0.0


async def test_missed_ticks_are_counted_in_mao_ticks_total(store: Store) -> None:
    before = _missed_total("instance")
    scheduler, _ = await down_for_an_hour(store, MemoryDoor(keep_active=True))  # latest: 11 missed, 1 run
    assert _missed_total("instance") - before == 11
    await scheduler.close()
