"""A burst of ticks read and recorded together (one SELECT ... IN and one executemany UPDATE), on
the compose deployment's database: the same check as tests/unit/test_scheduler_ticks.py (SQLite)."""

from __future__ import annotations

from orchestrator.domain.pipeline import Pipeline
from orchestrator.store import Store
from tests.unit.test_scheduler_ticks import check_burst


async def test_a_burst_of_ticks_on_postgres(module_database_url: str) -> None:
    store = Store(module_database_url)
    await store.start()
    try:
        pipeline = Pipeline.model_validate(
            {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
        )

        async def nothing() -> None:
            return None

        await store.save_pipeline(pipeline, before_commit=nothing)
        await check_burst(store)
        ticks = await store.recent_ticks([s.id for s in await store.list_schedules("p")], 1)
        assert all(len(t) == 1 for t in ticks.values())
    finally:
        await store.close()
