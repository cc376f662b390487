"""The orchestrator's copy of a step's log when its stream is cut for real: the executor is stopped
and started again while the step writes (the container outlives it, runs/log_keeper.py reconnects
with ``since`` = the bytes it has). The kept log has every line once, in order; the step's end is
recorded as if nothing happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.api import Api, unique
from tests.integration.conftest import Node, orchestrator_env

APP = "/usr/src/app"


@pytest.fixture
def own_executor_node(servers_tmp: Path, etcd, docker_engine, busybox_image) -> Iterator[tuple[Node, servers.ServiceProcess]]:
    executor = servers.start_executor({}, log_dir=servers_tmp / "logs", name=unique("cut-executor"))
    name = unique("node-cut")
    env = orchestrator_env(name, servers_tmp / name, etcd.endpoint, executor)
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), servers_tmp / name)
    try:
        yield node, executor
    finally:
        node.service.stop()
        executor.stop()


def test_a_cut_log_stream_is_kept_whole_and_in_order(own_executor_node: tuple[Node, servers.ServiceProcess]) -> None:
    node, executor = own_executor_node
    api: Api = node.api
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    # Numbered lines, bursts of ten, until the test lets it stop; then one last line.
    script = (
        f"i=0; while [ ! -e {APP}/data/go ]; do i=$((i+1)); echo \"line $i\"; "
        f"[ $((i % 10)) -eq 0 ] && sleep 0.05; done; rm {APP}/data/go; echo last"
    )
    step = {"name": "only", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", script], "stall_timeout": 30}
    pipeline = unique("cut")
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    run_id = api.run(pipeline, wait=False)["id"]
    servers.wait_until(
        lambda: api.ok(api.get(f"/runs/{run_id}"))["steps"][0]["attempts"], timeout=60, what="the attempt"
    )
    servers.wait_until(lambda: "line 200" in api.get(f"/runs/{run_id}/log", step="only").text, timeout=60, what="output")
    for _ in range(2):  # cut twice
        executor.stop()
        executor.restart()
        servers.wait_until(
            lambda: len(api.get(f"/runs/{run_id}/log", step="only").text) > 0, timeout=30, what="the log again"
        )
    (node.data_dir / "work" / out / f"only-{node.name}" / "go").touch()
    run = servers.wait_until(
        lambda: (r := api.ok(api.get(f"/runs/{run_id}")))["status"] in ("succeeded", "failed") and r,
        timeout=180,
        what="the run to end",
    )
    assert run["status"] == "succeeded", run
    assert [a["status"] for a in run["steps"][0]["attempts"]] == ["succeeded"]
    lines = api.get(f"/runs/{run_id}/log", step="only").text.splitlines()
    assert lines[-1] == "last"
    numbers = [int(line.split()[1]) for line in lines[:-1]]
    assert numbers == list(range(1, len(numbers) + 1)), "a line lost or doubled"
    assert len(numbers) > 200
    assert "dropped" in node.service.log_text() or "again from byte" in node.service.log_text()
