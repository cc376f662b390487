"""MAO_PHASE_TIMINGS=1 against real servers: a waiting run leaves one line of spans that covers the
step's path (its container through the executor seam, its git processes from the dataset threads,
the vote, the run's close), and a run that does not wait leaves none. Timings are never asserted."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.phases import FILE_NAME
from tests import servers
from tests.api import one_step_pipeline
from tests.integration.conftest import Node, orchestrator_env


@pytest.fixture(scope="module")
def timed_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    name = "node-phases"
    data_dir = servers_tmp / name
    env = {**orchestrator_env(name, data_dir, etcd.endpoint, executor), "MAO_PHASE_TIMINGS": "1"}
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    yield node
    node.service.stop()


def test_a_waiting_run_leaves_its_spans(timed_node: Node) -> None:
    api = timed_node.api
    pipeline, _ = one_step_pipeline(api, "echo hello > /usr/src/app/data/out.txt")
    run = api.run(pipeline)
    assert run["status"] == "succeeded", (run["error"], [s.get("error") for s in run["steps"]])
    path = timed_node.data_dir / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    entry = next(e for e in lines if e["run"] == run["id"])
    names = {name for name, _, _ in entry["spans"]}
    for expected in (
        "container/submit (create, start)",
        "container/wait for its end",
        "vote/git merge and push",
        "git push",  # from the dataset's thread: the context reached it
        "db: close the run",
    ):
        assert expected in names, (expected, sorted(names))
    assert all(entry["began"] <= start <= end <= entry["ended"] for _, start, end in entry["spans"])

    started = api.ok(api.post("/pipeline/run", {"name": pipeline, "wait": False}))
    deadline = time.monotonic() + 300  # a bound for a hung run, not a speed expectation
    while api.ok(api.get(f"/runs/{started['id']}"))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.2)
    assert started["id"] not in {json.loads(line)["run"] for line in path.read_text().splitlines()}
