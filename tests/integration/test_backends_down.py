"""PostgreSQL or the executor unreachable: answers that say which, and recovery when they return."""

from __future__ import annotations

from pathlib import Path

from tests import gitutil, servers
from tests.api import Api, assert_error, unique

from .conftest import orchestrator_env


def test_database_down_is_a_503_that_says_so(servers_tmp: Path, etcd, executor, busybox_image) -> None:
    database = servers.start_postgres(servers_tmp / "pg-flaky")
    env = orchestrator_env(
        "node-flaky-db", servers_tmp / "node-flaky-db", etcd.endpoint, executor, MAO_DATABASE_URL=database.url
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-flaky-db")
    api = Api(service.url)
    try:
        tool, data, pipeline = unique("tool"), unique("data"), unique("db")
        api.tool(tool)
        api.local_dataset(data)
        step = {"name": "s", "tool": tool, "output_dataset": data, "cmd": ["true"]}
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))

        database.stop(keep_data=True)
        for response in (
            api.get("/pipeline"),
            api.get("/runs"),
            api.post("/pipeline/run", {"name": pipeline}),
        ):
            error = assert_error(response, 503, "database_unavailable")
            assert "database" in error["message"]
        other = unique("other")
        assert_error(
            api.post("/pipeline/init", {"name": other, "steps": [step]}), 503, "database_unavailable"
        )
        health = api.get("/health")
        assert (
            health.status_code == 503 and health.json()["database"] != "ok" and health.json()["etcd"] == "ok"
        )
        # The refused init registered nothing in the federation either.
        assert_error(api.get(f"/registry/pipelines/{other}"), 404)

        database.start()
        assert api.run(pipeline)["status"] == "succeeded"
        assert [p["name"] for p in api.ok(api.get("/pipeline"))] == [pipeline]
    finally:
        service.stop()
        database.stop()


def test_executor_down_fails_the_step_and_says_so(servers_tmp: Path, etcd, busybox_image) -> None:
    executor = servers.start_executor({"MAO_INSTANCE_NAME": "flaky-executor"}, log_dir=servers_tmp / "logs")
    env = orchestrator_env("node-flaky-ex", servers_tmp / "node-flaky-ex", etcd.endpoint, executor)
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-flaky-ex")
    api = Api(service.url)
    try:
        tool, data, pipeline = unique("tool"), unique("data"), unique("ex")
        api.tool(tool)
        repo = api.local_dataset(data)
        step = {
            "name": "s",
            "tool": tool,
            "output_dataset": data,
            "cmd": ["sh", "-c", "date > /usr/src/app/data/d"],
        }
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))

        executor.stop()
        health = api.get("/health")
        assert health.status_code == 503 and "executor" in health.json()["executor"]
        run = api.run(pipeline)
        assert run["status"] == "failed" and "executor" in run["error"] and executor.url in run["error"]
        assert "s-node-flaky-ex" not in gitutil.branches(repo)

        executor.restart()
        assert api.run(pipeline)["status"] == "succeeded"
    finally:
        service.stop()
        executor.stop()
