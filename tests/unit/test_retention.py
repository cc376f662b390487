"""Retention: ended runs and tick records older than MAO_RUN_RETENTION_DAYS are deleted; recent ones
and runs still going stay (SQLite here; the same queries run on PostgreSQL in the integration test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from orchestrator.domain.pipeline import Pipeline
from orchestrator.retention import Retention
from orchestrator.store import Store
from orchestrator.store.retention import count_waiting_runs
from orchestrator.store.run_changes import NewAttempt
from orchestrator.store.runs import RunRecords
from orchestrator.store.tables import AttemptRow, RunRow

PIPELINE = Pipeline.model_validate(
    {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
)


async def make_run(store: Store, run_id: str, status: str, age_days: float) -> None:
    records = RunRecords(store)
    await records.create(run_id, PIPELINE, "manual", PIPELINE.graph(), ["s-node"])
    await records.start_attempt(NewAttempt(run_id, "s", 1, "t", f"mao-x-{run_id}-0-1"))  # the engine's rows
    created = datetime.now(UTC) - timedelta(days=age_days)
    async with store.session("age a run") as s:
        await s.execute(update(RunRow).where(RunRow.id == run_id).values(status=status, created_at=created))


async def test_old_runs_and_ticks_are_removed(tmp_path: Path) -> None:
    await check_retention(f"sqlite+aiosqlite:///{tmp_path / 'mao.db'}")


async def check_retention(url: str) -> None:
    store = Store(url)
    await store.start()
    try:
        await make_run(store, "old", "succeeded", 100)
        await make_run(store, "oldrunning", "running", 100)
        await make_run(store, "recent", "failed", 10)
        await make_run(store, "waiting", "pending", 0)
        now = datetime.now(UTC)
        await store.record_tick("sched", "p", now - timedelta(days=100), "fired", run_id="old")
        await store.record_tick("sched", "p", now, "skipped", reason="busy")
        async with store.session("age a tick") as s:
            from orchestrator.store.tables import TickRow

            await s.execute(
                update(TickRow).where(TickRow.run_id == "old").values(recorded_at=now - timedelta(days=100))
            )
        assert await count_waiting_runs(store) == 1

        runs, ticks = await Retention(store, days=90).clean()
        assert (runs, ticks) == (1, 1)
        assert await store.get_run("old") is None
        async with store.session("count attempts") as s:
            left = set((await s.scalars(select(AttemptRow.run_id))).all())
        assert left == {"oldrunning", "recent", "waiting"}  # the old run's attempts went with it
        for kept in ("oldrunning", "recent", "waiting"):
            assert await store.get_run(kept) is not None, kept
        assert [t.outcome for t in await store.list_ticks()] == ["skipped"]
        assert await Retention(store, days=90).clean() == (0, 0)
    finally:
        await store.close()
