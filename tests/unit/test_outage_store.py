"""What keeps runs going while etcd is away, on a real SQLite store: the registration copy, queued
merges (settled in one transaction), and a schema from an earlier version gaining its new column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.models import Pipeline
from orchestrator.store import Store
from orchestrator.store.outage import PendingMerges, RegistryCache

PIPELINE = Pipeline.model_validate(
    {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
)


@pytest.fixture
async def store(tmp_path: Path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    yield store
    await store.close()


async def new_run(store: Store, run_id: str) -> None:
    await store.create_run(run_id, PIPELINE, "manual", ["s-me"])
    await store.update_run(run_id, status="succeeded")
    await store.update_step(run_id, 0, status="succeeded", merge_state="queued")


async def test_registry_cache_keeps_the_last_read(store: Store) -> None:
    cache = RegistryCache(store)
    assert await cache.get("tool", "t") is None
    await cache.put("tool", "t", {"name": "t", "image": "a"})
    await cache.put("tool", "t", {"name": "t", "image": "b"})
    value, cached_at = await cache.get("tool", "t")  # type: ignore[misc]
    assert value == {"name": "t", "image": "b"} and cached_at.startswith("20")
    await cache.drop("tool", "t")
    assert await cache.get("tool", "t") is None


async def test_a_later_run_moves_the_queued_merge_forward(store: Store) -> None:
    pending = PendingMerges(store)
    for run_id, commit in (("r1", "c1"), ("r2", "c2")):
        await new_run(store, run_id)
        await pending.queue(
            "d", "s-me", "/m.git", commit, f"merge {run_id}", {"MAO-Run": run_id}, (run_id, 0)
        )
    (queued,) = await pending.all()
    assert queued["commit"] == "c2" and queued["steps"] == [["r1", 0], ["r2", 0]]
    assert queued["trailers"] == {"MAO-Run": "r2"}
    await pending.settle("d", "s-me", "c2", queued["steps"], "m1")
    assert await pending.all() == []
    for run_id in ("r1", "r2"):
        run = await store.get_run(run_id)
        assert run is not None and run["status"] == "succeeded"
        assert run["steps"][0]["merge"] == "merged" and run["steps"][0]["merge_commit"] == "m1"


async def test_settling_an_older_commit_keeps_the_newer_one_queued(store: Store) -> None:
    pending = PendingMerges(store)
    await new_run(store, "r1")
    await pending.queue("d", "s-me", "/m.git", "c1", "m", {}, ("r1", 0))
    (seen,) = await pending.all()
    await new_run(store, "r2")
    await pending.queue("d", "s-me", "/m.git", "c2", "m", {}, ("r2", 0))  # while r1's merge ran
    await pending.settle("d", "s-me", seen["commit"], seen["steps"], "m1")
    (left,) = await pending.all()
    assert left["commit"] == "c2" and left["steps"] == [["r2", 0]]


async def test_a_queued_merge_that_conflicts_fails_its_runs(store: Store) -> None:
    pending = PendingMerges(store)
    await new_run(store, "r1")
    await pending.queue("d", "s-me", "/m.git", "c1", "m", {}, ("r1", 0))
    await pending.failed_attempt("d", "s-me", "etcd is unreachable")
    (queued,) = await pending.all()
    assert queued["attempts"] == 1 and queued["last_error"] == "etcd is unreachable"
    await pending.settle("d", "s-me", "c1", queued["steps"], None, ["a.txt"], "conflicts in a.txt")
    run = await store.get_run("r1")
    assert run is not None and run["status"] == "failed" and run["error"] == "conflicts in a.txt"
    (step,) = run["steps"]
    assert step["status"] == "conflict" and step["merge"] == "conflict" and step["conflicts"] == ["a.txt"]


async def test_an_older_database_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # run_steps as an earlier version created it
        db.execute(
            "CREATE TABLE run_steps (run_id VARCHAR(32) NOT NULL, position INTEGER NOT NULL, "
            "name VARCHAR(128) NOT NULL, tool VARCHAR(128) NOT NULL, output_dataset VARCHAR(128) NOT NULL, "
            "branch VARCHAR(260) NOT NULL, status VARCHAR(16) NOT NULL, PRIMARY KEY (run_id, position))"
        )
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        await store.create_run("r1", PIPELINE, "manual", ["s-me"])
        await store.update_step("r1", 0, merge_state="queued", exit_code=0)
        run = await store.get_run("r1")
        assert run is not None and run["steps"][0]["merge"] == "queued"
    finally:
        await store.close()
