"""Overlap ``allow`` on a schedule: a tick that finds the previous run going starts another beside it
(``StandInRunner.start(..., busy=Busy.ALLOW)``); on a real SQLite store with a stand-in runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.runs.admission import Busy
from orchestrator.scheduling.cron import Scheduler
from orchestrator.store import Store
from tests.unit.scheduling_stand_ins import StandInRunner, store_with_pipeline


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_with_pipeline(tmp_path) as store:
        yield store


async def test_ticks_with_overlap_allow_start_beside_the_running_run(store: Store) -> None:
    runner = StandInRunner(keep_active=True)
    scheduler = Scheduler(store, runner)  # type: ignore[arg-type]
    schedule = await scheduler.add("p", "* * * * *", overlap="allow")
    await scheduler._tick(schedule["id"])
    await scheduler._tick(schedule["id"])
    assert runner.active_runs("p") == ["run1", "run2"]
    assert [r.get("busy") for r in runner.started] == [Busy.ALLOW, Busy.ALLOW]
    ticks = await store.list_ticks(schedule["id"])
    assert [t["outcome"] for t in ticks] == ["fired", "fired"]
    await scheduler.stop()


async def test_ticks_with_overlap_skip_do_not_ask_for_allow(store: Store) -> None:
    runner = StandInRunner(keep_active=True)
    scheduler = Scheduler(store, runner)  # type: ignore[arg-type]
    schedule = await scheduler.add("p", "* * * * *")
    await scheduler._tick(schedule["id"])
    await scheduler._tick(schedule["id"])
    assert runner.active_runs("p") == ["run1"] and runner.started[0]["busy"] is Busy.REFUSE
    ticks = await store.list_ticks(schedule["id"])
    assert [t["outcome"] for t in reversed(ticks)] == ["fired", "skipped"]
    await scheduler.stop()
