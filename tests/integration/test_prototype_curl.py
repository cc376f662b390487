"""The prototype README's curl samples, replayed unchanged (tests/data/prototype_curl.txt is a verbatim
copy) against an orchestrator on port 8080, the port they name.

So that a demo node (./scripts/demo.sh) or anything else holding the host's port 8080 does not matter,
curl runs in a private network namespace whose 127.0.0.1:8080 reaches the test's orchestrator on a
free port (tests/servers/netns.py). Without root or iproute2 it falls back to the host's port 8080."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import servers
from tests.api import Api
from tests.ctl_helpers import maoctl
from tests.servers import netns

from .conftest import orchestrator_env

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "prototype_curl.txt"


def commands() -> list[list[str]]:
    # Join the continuation lines, drop the trailing comments, split like a shell would (no shell runs).
    text = SAMPLES.read_text().replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def port_8080_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[tuple[Api, list[str]]]:
    """The node, and the argv prefix under which its port is 8080 (empty: the host's own 8080)."""
    private = netns.available()
    if not private:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 8080)) == 0:
                pytest.fail("port 8080 is taken (and without root no private namespace can be made)")
    # The prototype's clients send no token: this node runs in legacy open mode (loopback only).
    env = orchestrator_env(
        "node-8080", servers_tmp / "node-8080", etcd.endpoint, executor, MAO_API_LEGACY_OPEN="1"
    )
    service = servers.start_orchestrator(
        env, port=None if private else 8080, log_dir=servers_tmp / "logs", name="node-8080"
    )
    try:
        if private:
            with netns.forwarded_port(8080, service.port) as inside:
                yield Api(service.url), inside
        else:
            yield Api(service.url), []
    finally:
        service.stop()


def test_prototype_curl_samples_work_unchanged(port_8080_node: tuple[Api, list[str]]) -> None:
    api, inside = port_8080_node
    # What the samples assume exists: the busybox tool and the dataset their pipeline writes to.
    api.tool("busybox")
    api.local_dataset("some-dataset")

    answers = []
    for argv in commands():
        assert argv[0] == "curl"
        done = subprocess.run(
            [*inside, *argv, "-s", "-w", "\n%{http_code}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
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


def prototype_entry(url: str, kind: str, name: str) -> dict[str, object]:
    """What the prototype's API client did with ``GET /registry/<kind>/<name>`` (in our own words):
    the body is a JSON string holding the entry, decoded a second time."""
    response = requests.get(f"{url}/registry/{kind}/{name}", timeout=30)
    response.raise_for_status()
    decoded = json.loads(response.json())
    assert isinstance(decoded, dict), decoded
    return decoded


def test_registry_entries_come_in_the_prototypes_shape_in_legacy_mode(
    port_8080_node: tuple[Api, list[str]], sqlite_node
) -> None:
    api, _ = port_8080_node
    api.tool("busybox")
    api.local_dataset("some-dataset")
    tool = prototype_entry(api.url, "tools", "busybox")
    assert tool["name"] == "busybox" and tool["image"] == "busybox:latest"
    dataset = prototype_entry(api.url, "datasets", "some-dataset")
    assert dataset["name"] == "some-dataset" and str(dataset["master"]).endswith("some-dataset.git")
    # maoctl reads both shapes: the same entry as from a node in the default mode (an object).
    for kind in ("tool", "dataset"):
        name = "busybox" if kind == "tool" else "some-dataset"
        shown = maoctl(api.url, "--json", kind, "get", "--name", name, env={"MAO_API_TOKEN": ""})
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout) == (tool if kind == "tool" else dataset)
        listed = maoctl(api.url, "--json", kind, "get", env={"MAO_API_TOKEN": ""})
        assert name in [e["name"] for e in json.loads(listed.stdout)]
    # Without legacy mode the answer stays the object.
    default = sqlite_node.api  # reads the tool node-8080 registered (only its owner registers it again)
    assert default.ok(default.get("/registry/tools/busybox"))["image"] == "busybox:latest"
