"""etcd unreachable: clear 503s that say so, local reads keep working, nothing is half-written, and
local runs keep going: they commit and push their node branch, and their ground-truth merge is queued
and done once etcd is back (exactly once)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import gitutil, servers
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
    repo = api.local_dataset(data)
    step = {
        "name": "s",
        "tool": tool,
        "output_dataset": data,
        "cmd": ["sh", "-c", 'echo "$MAO_RUN_ID" >> /usr/src/app/data/d'],
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
        # A run needs no quorum: it runs from this instance's copy of the registrations, commits and
        # pushes its node branch, and queues the ground-truth merge.
        before = gitutil.tip(repo, "ground-truth")
        offline = [api.run(pipeline), api.run(pipeline)]
        for queued in offline:
            assert queued["status"] == "succeeded", queued
            (record,) = queued["steps"]
            assert record["merge"] == "queued" and record["merge_commit"] is None, record
        assert gitutil.tip(repo, "ground-truth") == before
        assert gitutil.tip(repo, f"s-{node.name}") == offline[-1]["steps"][0]["output_commit"]
    finally:
        etcd.start()
    assert api.get("/health").status_code == 200
    # etcd answers again: the queued merge is done at once (the membership heartbeat notices first).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        steps = [api.ok(api.get(f"/runs/{r['id']}"))["steps"][0] for r in offline]
        if all(s["merge"] == "merged" for s in steps):
            break
        time.sleep(0.2)
    assert all(s["merge"] == "merged" for s in steps), steps
    tip = gitutil.tip(repo, "ground-truth")
    assert steps[0]["merge_commit"] == steps[1]["merge_commit"] == tip
    # One merge for both runs: the later run's commit covers the earlier one; nothing merged twice.
    assert gitutil.parents(repo, tip) == [before, offline[1]["steps"][0]["output_commit"]]
    assert gitutil.show(repo, "ground-truth", "d").split() == [run["id"], *(r["id"] for r in offline)]
    assert sorted(api.ok(api.get("/registry/tools"))) == [tool]  # the refused write left nothing behind
    assert api.ok(api.get("/registry/pipelines")) == [pipeline]
    assert api.run(pipeline)["status"] == "succeeded"
