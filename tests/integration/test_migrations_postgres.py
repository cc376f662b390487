"""The migrations on PostgreSQL (tests/unit/test_migrations.py checks SQLite): a database at the
revision before pipeline versions, holding a pipeline, is upgraded to the head, its pipeline gets
version 1 (and initialising the same definition records no version 2), and the schema the revisions
built matches ``store.tables`` (no drift)."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.versions import definition_hash
from orchestrator.store import Store, migrate
from orchestrator.store.tables import Base
from orchestrator.store.versions import PipelineVersions

STEPS = [{"name": "s", "tool": "t", "output_dataset": "o", "cmd": ["true"], "env": None,
          "input_dataset": None, "docker_socket": False}]  # fmt: skip


async def test_versions_arrive_on_postgres_without_drift(module_database_url: str) -> None:
    engine = create_async_engine(module_database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(migrate._config(c), "0005"))
        await conn.execute(
            text(
                "INSERT INTO pipelines (name, description, steps, created_at, updated_at) "
                "VALUES ('p', 'd', :steps, :at, :at)"
            ).bindparams(bindparam("steps", type_=JSON)),
            {"steps": STEPS, "at": datetime(2026, 1, 2, tzinfo=UTC)},
        )
    await engine.dispose()
    store = Store(module_database_url)
    await store.start()
    try:
        (first,) = await PipelineVersions(store).recent("p", 10)
        pipeline = Pipeline.model_validate({"name": "p", "description": "d", "steps": STEPS})
        assert (first.number, first.created_by, first.hash) == (1, "migration", definition_hash(pipeline))

        async def nothing() -> None:
            return None

        assert (await store.save_pipeline(pipeline, nothing)).new is False
        assert store.engine is not None
        async with store.engine.connect() as conn:
            drift = await conn.run_sync(
                lambda c: list(compare_metadata(MigrationContext.configure(c), Base.metadata))
            )
        assert drift == []
    finally:
        await store.close()
