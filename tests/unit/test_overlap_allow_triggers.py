"""Overlap ``allow`` on a schedule: a tick that finds the previous run going starts another beside it
(``Runner.start(..., busy=Busy.ALLOW)``); on a real SQLite store with a stand-in runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import Pipeline
from orchestrator.runs.admission import Busy
from orchestrator.scheduling import Scheduler
from orchestrator.store import Store


class Runner:
    def __init__(self) -> None:
        self.active: dict[str, list[str]] = {}
        self.started: list[dict[str, Any]] = []

    def active_run(self, pipeline: str) -> str | None:
        runs = self.active.get(pipeline)
        return runs[0] if runs else None

    def active_runs(self, pipeline: str) -> list[str]:
        return list(self.active.get(pipeline, []))

    def is_queued(self, run_id: str) -> bool:
        return False

    async def start(self, name: str, trigger: str, schedule_id: str | None = None, **cause: Any) -> str:
        if self.active.get(name) and cause.get("busy") is not Busy.ALLOW:
            raise AssertionError("a second run without busy=Busy.ALLOW")
        run_id = f"run{len(self.started) + 1}"
        self.started.append({"id": run_id, **cause})
        self.active.setdefault(name, []).append(run_id)
        return run_id


@pytest.fixture
async def store(tmp_path: Path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    pipeline = Pipeline.model_validate({"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]})

    async def nothing() -> None:
        return None

    await store.save_pipeline(pipeline, before_commit=nothing)
    yield store
    await store.close()


async def test_ticks_with_overlap_allow_start_beside_the_running_run(store: Store) -> None:
    runner = Runner()
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
    runner = Runner()
    scheduler = Scheduler(store, runner)  # type: ignore[arg-type]
    schedule = await scheduler.add("p", "* * * * *")
    await scheduler._tick(schedule["id"])
    await scheduler._tick(schedule["id"])
    assert runner.active_runs("p") == ["run1"] and runner.started[0]["busy"] is Busy.REFUSE
    ticks = await store.list_ticks(schedule["id"])
    assert [t["outcome"] for t in reversed(ticks)] == ["fired", "skipped"]
    await scheduler.stop()
