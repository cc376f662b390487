"""etcd unreachable: clear 503s that say so, local reads keep working, nothing is half-written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.api import Api, assert_error, unique

from .conftest import Node, orchestrator_env


@pytest.fixture(scope="module")
def lonely(servers_tmp: Path, executor, busybox_image) -> Iterator[tuple[Node, servers.EtcdServer]]:
    etcd = servers.start_etcd(servers_tmp / "etcd-lonely", name="lonely")
    env = orchestrator_env("node-lonely", servers_tmp / "node-lonely", etcd.endpoint, executor)
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-lonely")
    yield Node(service, servers_tmp / "node-lonely"), etcd
    service.stop()
    etcd.destroy()


def test_etcd_down_answers_503_and_keeps_local_reads(lonely: tuple[Node, servers.EtcdServer]) -> None:
    node, etcd = lonely
    api: Api = node.api
    tool, data, pipeline = unique("tool"), unique("data"), unique("local")
    api.tool(tool)
    api.local_dataset(data)
    step = {
        "name": "s",
        "tool": tool,
        "output_dataset": data,
        "cmd": ["sh", "-c", "date > /usr/src/app/data/d"],
    }
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    run = api.run(pipeline)
    assert run["status"] == "succeeded"

    etcd.stop()
    try:
        for response in (
            api.post("/registry/tools", {"name": unique("late"), "image": "busybox"}),
            api.get("/registry/tools"),
            api.post("/pipeline/init", {"name": unique("late"), "steps": [step]}),
            api.delete(f"/registry/datasets/{data}"),
        ):
            error = assert_error(response, 503, "etcd_unavailable")
            assert "etcd" in error["message"]
        health = api.get("/health")
        assert (
            health.status_code == 503 and health.json()["etcd"] != "ok" and health.json()["database"] == "ok"
        )
        # This instance's own records do not need the federation.
        assert pipeline in [p["name"] for p in api.ok(api.get("/pipeline"))]
        assert api.ok(api.get(f"/runs/{run['id']}"))["status"] == "succeeded"
        assert api.ok(api.get("/jobs")) == {}
        # A run needs the registry: it fails cleanly and says why.
        failed = api.run(pipeline)
        assert failed["status"] == "failed" and "etcd" in failed["error"]
    finally:
        etcd.start()
    assert api.get("/health").status_code == 200
    assert sorted(api.ok(api.get("/registry/tools"))) == [tool]  # the refused write left nothing behind
    assert api.ok(api.get("/registry/pipelines")) == [pipeline]
    assert api.run(pipeline)["status"] == "succeeded"
