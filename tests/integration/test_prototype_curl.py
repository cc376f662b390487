"""The prototype README's curl samples, replayed unchanged (tests/data/prototype_curl.txt is a verbatim
copy) against an orchestrator on port 8080, the port they name."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.api import Api

from .conftest import orchestrator_env

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "prototype_curl.txt"


def commands() -> list[list[str]]:
    # Join the continuation lines, drop the trailing comments, split like a shell would (no shell runs).
    text = SAMPLES.read_text().replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def port_8080_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Api]:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.fail("port 8080 is taken: the prototype's samples need it for this test")
    # The prototype's clients send no token: this node runs in legacy open mode (loopback only).
    env = orchestrator_env(
        "node-8080", servers_tmp / "node-8080", etcd.endpoint, executor, MAO_API_LEGACY_OPEN="1"
    )
    service = servers.start_orchestrator(env, port=8080, log_dir=servers_tmp / "logs", name="node-8080")
    yield Api(service.url)
    service.stop()


def test_prototype_curl_samples_work_unchanged(port_8080_node: Api) -> None:
    api = port_8080_node
    # What the samples assume exists: the busybox tool and the dataset their pipeline writes to.
    api.tool("busybox")
    api.local_dataset("some-dataset")

    answers = []
    for argv in commands():
        assert argv[0] == "curl"
        done = subprocess.run(
            [*argv, "-s", "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=60, check=True
        )
        body, _, status = done.stdout.rpartition("\n")
        answers.append((int(status), json.loads(body)))

    (ds_status, dataset), (init_status, init), (run_status, run), (repo_status, repo) = answers
    assert ds_status == 200 and dataset == {"name": "name-of-dataset", "master": "git-link", "nodes": []}
    assert init_status == 200 and init["ok"] is True and init["name"] == "pipeline1"
    assert init["steps"][0]["env"] == {"DEMO_TOOL_ENV": "foo.bar.env"}
    assert run_status == 400 and run["error"] == "invalid_cron"  # the placeholder "cron-string" is not a cron
    assert repo_status == 200 and Path(repo["path"]).is_dir() and repo["path"].endswith("name-of-dataset.git")

    # The pipeline the samples initialised really runs (its step sleeps 10 s, as in the sample).
    result = api.run("pipeline1")
    assert result["status"] == "succeeded", result
    assert "pipeline1" in [p["name"] for p in api.ok(api.get("/pipeline"))]
    # Legacy mode is loud about itself.
    assert "MAO_API_LEGACY_OPEN" in " ".join(api.ok(api.get("/health"))["warnings"])
