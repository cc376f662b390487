"""Schema migrations on SQLite: a database made before migrations existed (the frozen baseline
schema, exactly what ``create_all`` made at f8a48b9) is stamped and upgraded with its history; a new
one is built by the revisions; either way the result matches ``store.tables`` (no drift)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from orchestrator.store import Store, migrate
from orchestrator.store.migrations.baseline import tables_0001
from orchestrator.store.outage import PendingMerges
from orchestrator.store.tables import Base


def _old_database(path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}")
    tables_0001.Base.metadata.create_all(engine)
    engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute(
            'INSERT INTO runs (id, pipeline, "trigger", status, created_at) '
            "VALUES ('r1', 'p', 'manual', 'succeeded', '2026-01-01 00:00:00')"
        )
        for position, name in enumerate(("collect", "count")):
            db.execute(
                "INSERT INTO run_steps (run_id, position, name, tool, output_dataset, branch, status) "
                "VALUES ('r1', ?, ?, 't', 'd', ?, 'succeeded')",
                (position, name, f"{name}-me"),
            )
        db.execute(
            'INSERT INTO pending_merges (dataset, branch, master, "commit", message, trailers, steps, '
            "queued_at, attempts) VALUES ('d', 'count-me', '/m.git', 'c1', 'm', '{}', ?, "
            "'2026-01-01 00:00:00', 0)",
            (json.dumps([["r1", 1]]),),
        )


def _no_drift(path: Path) -> list[object]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


async def test_a_database_from_before_migrations_is_upgraded_with_its_history(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _old_database(path)
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        run = await store.get_run("r1")
        assert run is not None and [s.name for s in run.steps] == ["collect", "count"]
        assert run.steps[1].needs == ("collect",) and run.steps[1].attempts == ()
        (queued,) = await PendingMerges(store).all()
        assert queued["steps"] == [["r1", "count"]]
        # Schedule semantics (0003): the old run stands for no tick and no data trigger.
        assert run.tick_at is None and "trigger_dataset" not in run.to_json()
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrate.head(),)]
    assert _no_drift(path) == []


async def test_an_old_schedule_keeps_its_defaults_after_the_schedule_columns_arrive(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _old_database(path)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO pipelines (name, description, steps, created_at, updated_at) "
            "VALUES ('p', '', '[]', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        db.execute(
            "INSERT INTO schedules (id, pipeline, cron, timezone, created_at) "
            "VALUES ('s1', 'p', '0 * * * *', 'UTC', '2026-01-01 00:00:00')"
        )
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        (schedule,) = await store.list_schedules()
        assert schedule.cron == "0 * * * *" and schedule.overlap == "skip"
        assert schedule.catchup == "latest" and schedule.catchup_window is None
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrate.head(),)]
    assert _no_drift(path) == []


@pytest.mark.parametrize("starts", [1, 2])
async def test_a_new_database_is_built_by_the_revisions(tmp_path: Path, starts: int) -> None:
    path = tmp_path / "new.sqlite"
    for _ in range(starts):  # a second start finds nothing to do
        store = Store(f"sqlite+aiosqlite:///{path}")
        await store.start()
        await store.close()
    assert _no_drift(path) == []


async def test_existing_pipelines_get_version_1_and_the_same_definition_no_version_2(tmp_path: Path) -> None:
    from orchestrator.domain.pipeline import Pipeline
    from orchestrator.domain.versions import definition_hash
    from orchestrator.store.versions import PipelineVersions

    path = tmp_path / "old.sqlite"
    _old_database(path)
    steps = [{"name": "s", "tool": "t", "output_dataset": "o", "cmd": ["true"], "env": None,
              "input_dataset": None, "docker_socket": False}]  # fmt: skip
    with sqlite3.connect(path) as db:
        for name, spec in (("p", json.dumps(steps)), ("empty", "[]")):  # "empty": no model reads it
            db.execute(
                "INSERT INTO pipelines (name, description, steps, created_at, updated_at) "
                "VALUES (?, 'd', ?, '2026-01-01 00:00:00', '2026-01-02 00:00:00')",
                (name, spec),
            )
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        versions = PipelineVersions(store)
        (first,) = await versions.recent("p", 10)
        pipeline = Pipeline.model_validate({"name": "p", "description": "d", "steps": steps})
        assert (first.number, first.created_by, first.hash) == (1, "migration", definition_hash(pipeline))
        assert first.created_at.isoformat() == "2026-01-02T00:00:00+00:00"
        (kept,) = await versions.recent("empty", 10)
        assert kept.definition["steps"] == [] and len(kept.hash) == 64
        run = await store.get_run("r1")
        assert run is not None and run.version is None  # which definition it ran is not known

        async def nothing() -> None:
            return None

        same = await store.save_pipeline(pipeline, nothing)
        assert (same.number, same.new) == (1, False)
    finally:
        await store.close()
    assert _no_drift(path) == []
