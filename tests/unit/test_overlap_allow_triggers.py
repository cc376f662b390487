"""Overlap ``allow`` on a schedule: a tick that finds the previous run going asks the door for another
beside it; on a real SQLite store with the door in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.domain.schedule import ScheduleOptions
from orchestrator.scheduling.cron import Scheduler
from orchestrator.store import Store
from tests.unit.memory_door import MemoryDoor
from tests.unit.scheduling_stand_ins import store_with_pipeline


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_with_pipeline(tmp_path) as store:
        yield store


async def test_ticks_with_overlap_allow_start_beside_the_running_run(store: Store) -> None:
    door = MemoryDoor(keep_active=True)
    scheduler = Scheduler(store, door)
    schedule = await scheduler.add("p", "* * * * *", options=ScheduleOptions(overlap="allow"))
    await scheduler._tick(schedule.id)
    await scheduler._tick(schedule.id)
    assert door.active_runs("p") == ["run1", "run2"]
    assert [ask.overlap for ask in door.asks] == ["allow", "allow"]
    ticks = await store.list_ticks(schedule.id)
    assert [t.outcome for t in ticks] == ["fired", "fired"]
    await scheduler.close()


async def test_ticks_with_overlap_skip_do_not_ask_for_allow(store: Store) -> None:
    door = MemoryDoor(keep_active=True)
    scheduler = Scheduler(store, door)
    schedule = await scheduler.add("p", "* * * * *")
    await scheduler._tick(schedule.id)
    await scheduler._tick(schedule.id)
    assert door.active_runs("p") == ["run1"] and [ask.overlap for ask in door.asks] == ["skip", "skip"]
    ticks = await store.list_ticks(schedule.id)
    assert [t.outcome for t in reversed(ticks)] == ["fired", "skipped"]
    await scheduler.close()
