"""What survives a crash: an orchestrator SIGKILLed mid-run reconciles the run at its restart, and a
database made before migrations is upgraded in place on PostgreSQL (SQLite: tests/unit)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests import gitutil, servers
from tests.api import Api, unique
from tests.integration.conftest import orchestrator_env

APP = "/usr/src/app"


def _containers_of(run_id: str) -> list[str]:
    client = docker.from_env()
    try:
        return [c.name for c in client.containers.list(all=True, ignore_removed=True, filters={"label": f"mao.run={run_id}"})]
    finally:
        client.close()


async def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


def _merges_of(repo: str, run_id: str) -> int:
    out = gitutil.git(repo, "log", "--merges", "--format=%(trailers:key=MAO-Run,valueonly)", "ground-truth")
    return sum(1 for line in out.splitlines() if line.strip() == run_id)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_run_then_restart_reconciles(
    backend: str, request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor
) -> None:
    name = unique("node-crash")
    data_dir = servers_tmp / name
    if backend == "postgres":
        url = request.getfixturevalue("postgres").create_database(f"crash_{uuid.uuid4().hex[:8]}")
    else:
        url = f"sqlite+aiosqlite:///{data_dir / 'mao.db'}"
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor, MAO_DATABASE_URL=url)
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
    try:
        api = Api(service.url, service.token)
        tool, out, pipeline = unique("tool"), unique("out"), unique("crash")
        api.tool(tool)
        repo = api.local_dataset(out)
        steps = [
            {
                "name": "one",
                "tool": tool,
                "output_dataset": out,
                "cmd": ["sh", "-c", f"echo 1 > {APP}/data/1"],
            },
            {"name": "two", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", "echo on; sleep 300"]},
            {"name": "three", "tool": tool, "output_dataset": out, "cmd": ["true"]},
        ]
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
        run_id = api.run(pipeline, wait=False)["id"]
        servers.wait_until(
            lambda: any(c.endswith("-1-1") for c in _containers_of(run_id)),
            timeout=60,
            what="step two's container",
        )
        service.kill()
        # As if the crash had come between step one's merge and its record: reconcile must find
        # the merge on ground-truth (by its trailers) rather than merge again or call it failed.
        asyncio.run(
            _sql(
                url,
                "UPDATE run_steps SET status = 'running', merge_commit = NULL WHERE run_id = :r AND name = 'one'",
                r=run_id,
            )
        )
        service.process.start()
        service.wait_ready()
        run = api.ok(api.get(f"/runs/{run_id}"))
        assert run["status"] == "failed" and "interrupted" in run["error"], run
        one, two, three = run["steps"]
        assert one["status"] == "succeeded" and one["merge"] == "merged"
        assert one["merge_commit"] == gitutil.tip(repo, "ground-truth")
        assert two["status"] == "failed" and two["attempts"][0]["status"] == "cancelled"
        assert three["status"] == "skipped" and three["attempts"] == []
        servers.wait_until(lambda: _containers_of(run_id) == [], timeout=30, what="no container left")
        assert _merges_of(repo, run_id) == 1
        assert f"two-{name}" not in gitutil.branches(repo)
        # The instance runs the pipeline again normally.
        started = time.monotonic()
        assert api.post("/pipeline/run", {"name": pipeline, "wait": False}).status_code == 202
        assert time.monotonic() - started < 60
    finally:
        service.stop()


def test_a_postgresql_database_from_before_migrations_is_upgraded(postgres) -> None:
    from orchestrator.store import Store, migrate
    from orchestrator.store.migrations.baseline import tables_0001

    url = postgres.create_database(f"old_{uuid.uuid4().hex[:8]}")

    async def scenario() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(tables_0001.Base.metadata.create_all)
            await conn.execute(
                text(
                    "INSERT INTO runs (id, pipeline, trigger, status, created_at) "
                    "VALUES ('r1', 'p', 'manual', 'succeeded', now())"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO run_steps (run_id, position, name, tool, output_dataset, branch, status) "
                    "VALUES ('r1', 0, 's', 't', 'd', 's-me', 'succeeded')"
                )
            )
            await conn.execute(
                text(
                    'INSERT INTO pending_merges (dataset, branch, master, "commit", message, trailers, '
                    "steps, queued_at, attempts) VALUES ('d', 's-me', '/m.git', 'c', 'm', '{}', "
                    "'[[\"r1\", 0]]', now(), 0)"
                )
            )
        await engine.dispose()
        for _ in range(2):  # the second start has nothing to do
            store = Store(url)
            await store.start()
            try:
                run = await store.get_run("r1")
                assert run is not None and run["steps"][0]["name"] == "s"
                assert run["steps"][0]["attempts"] == [] and run["steps"][0]["needs"] == []
                assert run["tick_at"] is None and "trigger_dataset" not in run  # revision 0003
            finally:
                await store.close()
        (version,) = await _sql(url, "SELECT version_num FROM alembic_version")
        assert version[0] == migrate.head()
        columns = await _sql(
            url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'schedules'"
        )
        assert {"overlap", "catchup", "catchup_window", "dataset"} <= {c[0] for c in columns}
        (steps,) = await _sql(url, "SELECT steps FROM pending_merges")
        assert steps[0] in ('[["r1", "s"]]', [["r1", "s"]])

    asyncio.run(scenario())
