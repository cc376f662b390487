"""The scheduler's tick decisions, on a real SQLite store with the door in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from orchestrator.metrics import Metrics
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


async def test_tick_skips_while_the_previous_run_is_going(store: Store) -> None:
    door = MemoryDoor()
    scheduler = Scheduler(store, door)
    schedule = await scheduler.add("p", "* * * * *")
    await scheduler._tick(schedule.id)
    door.active["p"] = ["run1"]
    await scheduler._tick(schedule.id)
    ticks = await store.list_ticks(schedule.id)
    assert [t.outcome for t in reversed(ticks)] == ["fired", "skipped"]
    assert ticks[0].reason == "previous run run1 still running (overlap 'skip')"
    assert door.pipelines() == ["p"]
    await scheduler.close()


async def test_missed_ticks_lead_to_one_catch_up_run(store: Store) -> None:
    # A fixed clock and a daily cron: the real clock crossing a tick mid-test can't add a run.
    now = datetime(2026, 6, 10, 12, 30, tzinfo=UTC)
    door = MemoryDoor()
    scheduler = Scheduler(store, door, clock=Clock.fixed(now))
    schedule = await scheduler.add("p", "0 12 * * *")
    await scheduler.close()
    # The instance was down for twenty days: twenty noon ticks were missed.
    async with store.session("rewind") as s:
        row = await s.get(ScheduleRow, schedule.id)
        assert row is not None
        row.last_tick_at = now - timedelta(days=20)
    restarted = Scheduler(store, door, clock=Clock.fixed(now))
    await restarted.start()
    assert door.pipelines() == ["p"]
    ticks = await store.list_ticks(schedule.id, limit=100)
    tick = ticks[0]  # newest first: the catch-up run stands for the latest missed tick
    assert tick.outcome == "fired" and (tick.reason or "").startswith("catch-up for ticks missed since")
    # Every other missed tick is recorded as missed, superseded by the catch-up run.
    assert len(ticks) == 20 and {t.outcome for t in ticks[1:]} == {"missed"}
    assert "superseded by the catch-up run" in (ticks[1].reason or "")
    # Started again at the same instant: nothing more was missed, so no second catch-up.
    await restarted.close()
    again = Scheduler(store, door, clock=Clock.fixed(now))
    await again.start()
    assert door.pipelines() == ["p"]
    await again.close()


async def test_nothing_missed_means_no_catch_up(store: Store) -> None:
    door = MemoryDoor()
    scheduler = Scheduler(store, door)
    await scheduler.add("p", "0 0 1 1 *")
    await scheduler.close()
    restarted = Scheduler(store, door)
    await restarted.start()
    assert door.started == [] and len(restarted.next_run_times()) == 1
    await restarted.close()


async def test_a_fired_tick_observes_its_lag_and_a_skipped_one_does_not(store: Store) -> None:
    door = MemoryDoor()
    scheduler = Scheduler(store, door)
    scheduler.metrics = metrics = Metrics()
    schedule = await scheduler.add("p", "* * * * *")
    await scheduler._tick(schedule.id)
    door.active["p"] = ["run1"]
    await scheduler._tick(schedule.id)
    sample = metrics.registry.get_sample_value
    assert sample("mao_schedule_lag_seconds_count", {"scope": "instance"}) == 1
    assert sample("mao_ticks_total", {"scope": "instance", "outcome": "fired"}) == 1
    assert sample("mao_ticks_total", {"scope": "instance", "outcome": "skipped"}) == 1
    await scheduler.close()


async def test_a_burst_of_ticks_is_read_and_recorded_together(store: Store) -> None:
    await check_burst(store)


async def check_burst(store: Store) -> None:
    """Every schedule due in the same second: each tick recorded once, with its schedule's
    last_tick_at moved, and a schedule deleted meanwhile is forgotten, not recorded. ``store`` has
    pipeline ``p`` (also run on PostgreSQL: tests/integration/test_tick_burst_postgres.py)."""
    door = MemoryDoor()
    door.active["p"] = ["busy"]
    scheduler = Scheduler(store, door)
    ids = [(await scheduler.add("p", "* * * * *", add=True)).id for _ in range(120)]
    gone = ids.pop()
    await store.delete_schedule(gone)
    async with store.session("rewind") as s:  # created just now: their last tick an hour ago
        await s.execute(update(ScheduleRow).values(last_tick_at=datetime.now(UTC) - timedelta(hours=1)))
    await asyncio.gather(*(scheduler._tick(i) for i in [*ids, gone]))
    ticks = await store.list_ticks(limit=1000)
    assert sorted(t.schedule_id for t in ticks) == sorted(ids)
    assert {t.outcome for t in ticks} == {"skipped"} and len({t.due_at for t in ticks}) == 1
    schedules = await store.get_schedules([*ids, gone])
    assert schedules[-1] is None and scheduler._scheduler.get_job(gone) is None
    assert {s.last_tick_at for s in schedules[:-1] if s} == {ticks[0].due_at}
    await scheduler.close()
