"""What survives a crash: an orchestrator SIGKILLed mid-run adopts the attempt still running at its
restart and the run goes on (or, when the attempt's object is gone, closes the run), and a database
made before migrations is upgraded in place on PostgreSQL (SQLite: tests/unit)."""

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


def _container(run_id: str, suffix: str) -> Any:
    client = docker.from_env()
    try:
        found = client.containers.list(ignore_removed=True, all=True, filters={"label": f"mao.run={run_id}"})
        return next((c for c in found if c.name.endswith(suffix)), None)
    finally:
        client.close()


def _wait_for_run(api: Api, run_id: str, timeout: float = 180) -> dict[str, Any]:
    servers.wait_until(
        lambda: api.ok(api.get(f"/runs/{run_id}"))["status"] in ("succeeded", "failed", "cancelled"),
        timeout=timeout,
        what=f"run {run_id} to end",
    )
    return api.ok(api.get(f"/runs/{run_id}"))


def _node(request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor, backend: str) -> tuple[Any, str, str]:
    name = unique("node-crash")
    data_dir = servers_tmp / name
    if backend == "postgres":
        url = request.getfixturevalue("postgres").create_database(f"crash_{uuid.uuid4().hex[:8]}")
    else:
        url = f"sqlite+aiosqlite:///{data_dir / 'mao.db'}"
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor, MAO_DATABASE_URL=url)
    return servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), name, url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_attempt_then_restart_adopts_the_attempt_and_the_run_goes_on(
    backend: str, request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor
) -> None:
    service, name, url = _node(request, servers_tmp, etcd, executor, backend)
    try:
        api = Api(service.url, service.token)
        tool, out, pipeline = unique("tool"), unique("out"), unique("crash")
        api.tool(tool)
        repo = api.local_dataset(out)
        # Step two runs until the test lets it finish (a file in its output folder), so that it is
        # still running across the orchestrator's death and restart, however slow the machine.
        wait_for_go = (
            f"echo started; while [ ! -e {APP}/data/go ]; do sleep 0.2; done; "
            f"rm {APP}/data/go; echo finished; echo 2 > {APP}/data/2"
        )
        steps = [
            {"name": "one", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", f"echo 1 > {APP}/data/1"]},
            {"name": "two", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", wait_for_go]},
            {"name": "three", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", f"echo 3 > {APP}/data/3"]},
        ]
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
        run_id = api.run(pipeline, wait=False)["id"]
        servers.wait_until(lambda: _container(run_id, "-1-1") is not None, timeout=60, what="step two's container")
        before = _container(run_id, "-1-1")
        service.kill()
        # As if the crash had come between step one's merge and its record: the restart must find
        # the merge on ground-truth (by its trailers) rather than merge again or call it failed.
        asyncio.run(
            _sql(
                url,
                "UPDATE run_steps SET status = 'running', merge_commit = NULL WHERE run_id = :r AND name = 'one'",
                r=run_id,
            )
        )
        before.reload()
        assert before.status == "running"  # the tool outlives the orchestrator
        service.process.start()
        service.wait_ready()
        running = api.ok(api.get(f"/runs/{run_id}"))
        assert running["status"] == "running" and running["steps"][1]["status"] == "running", running
        assert running["steps"][1]["attempts"][0]["status"] == "running", running
        # Let the adopted tool finish.
        (servers_tmp / name / "work" / out / f"two-{name}" / "go").touch()
        run = _wait_for_run(api, run_id)
        assert run["status"] == "succeeded", run
        one, two, three = run["steps"]
        assert one["status"] == "succeeded" and one["merge"] == "merged"
        # Adopted, never submitted again: one attempt, and it is the container that was running.
        assert [(a["attempt"], a["status"]) for a in two["attempts"]] == [(1, "succeeded")]
        assert two["attempts"][0]["backend"] == "local" and two["attempts"][0]["node"]
        log = api.get(f"/runs/{run_id}/log", step="two")
        assert log.status_code == 200 and log.text == "started\nfinished\n", log.text
        assert three["status"] == "succeeded"
        assert gitutil.show(repo, "ground-truth", "2").strip() == "2"
        assert gitutil.show(repo, "ground-truth", "3").strip() == "3"
        assert _merges_of(repo, run_id) == 3  # one per step: none twice
        assert executor.log_text().count(f"Container {before.name} submitted") == 1
        servers.wait_until(lambda: _containers_of(run_id) == [], timeout=30, what="no container left")
        assert "resumed 1 run(s)" in service.log_text()
    finally:
        service.stop()


def test_a_run_whose_attempt_is_gone_after_the_crash_is_closed(
    request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor
) -> None:
    service, _, _ = _node(request, servers_tmp, etcd, executor, "sqlite")
    try:
        api = Api(service.url, service.token)
        tool, out, pipeline = unique("tool"), unique("out"), unique("crash")
        api.tool(tool)
        repo = api.local_dataset(out)
        steps = [
            {"name": "one", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", "echo on; sleep 300"]},
            {"name": "two", "tool": tool, "output_dataset": out, "cmd": ["true"]},
        ]
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
        run_id = api.run(pipeline, wait=False)["id"]
        servers.wait_until(lambda: _container(run_id, "-0-1") is not None, timeout=60, what="step one's container")
        service.kill()
        _container(run_id, "-0-1").remove(force=True)  # the object is gone while nobody watches
        service.process.start()
        service.wait_ready()
        run = api.ok(api.get(f"/runs/{run_id}"))
        assert run["status"] == "failed" and "interrupted" in run["error"], run
        one, two = run["steps"]
        assert one["status"] == "failed" and one["attempts"][0]["status"] == "cancelled"
        assert two["status"] == "skipped" and two["attempts"] == []
        assert _containers_of(run_id) == []
        assert _merges_of(repo, run_id) == 0
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
                assert run is not None and run.steps[0].name == "s"
                assert run.steps[0].attempts == () and run.steps[0].needs == ()
                assert run.tick_at is None and run.trigger_dataset is None  # revision 0003
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
