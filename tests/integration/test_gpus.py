"""A step's ``gpus`` through the API of a real orchestrator on the session's Docker executor
(docs/backends.md#gpus): a bad value is a 400 naming the field; a backend without GPUs (the default
``local``) refuses the step at init, one that declares them (``MAO_BACKEND_<NAME>_GPUS``) takes up to
that many and says so in ``GET /backends`` and ``maoctl backend list``; a run after the backend's GPUs
went is a 400, never a weaker run; and the DeviceRequests reach the real engine, which has no NVIDIA
runtime here, so the attempt fails with the engine's word and no container is left. The translation
for each engine is tests/unit/test_gpus.py; Slurm's pending GPU job is
tests/integration/backends/test_slurm.py, the Kubernetes pod's limits
tests/integration/backends/test_kubernetes.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import servers
from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl
from tests.integration.conftest import Node, orchestrator_env

GPUS = 2


@pytest.fixture(scope="module")
def gpu_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    """An instance with two docker backends on the session's executor: ``local`` (no GPUs, the
    default) and ``gpu`` (its host declared to have two)."""
    name = unique("node-gpus")
    extra = {"MAO_BACKENDS": "local=docker,gpu=docker", "MAO_BACKEND_GPU_GPUS": str(GPUS)}
    env = orchestrator_env(name, servers_tmp / name, etcd.endpoint, executor, **extra)
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), servers_tmp / name)
    yield node
    node.service.stop()


def pipeline(api: Api, **fields: Any) -> dict[str, Any]:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    step = {"name": "infer", "tool": tool, "output_dataset": out, "cmd": ["true"], **fields}
    return {"name": unique("p"), "steps": [step]}


@pytest.mark.parametrize("value", [-1, 65, "1", True, 1.5, None, [1]])
def test_a_gpus_that_is_not_0_to_64_is_a_400_naming_the_field(gpu_node: Node, value: object) -> None:
    api = gpu_node.api
    body = pipeline(api, gpus=value, backend="gpu")
    error = assert_error(api.post("/pipeline/init", body), 400, "invalid_request")
    assert "gpus" in error["message"], error
    assert_error(api.get(f"/pipeline/{body['name']}"), 404)  # nothing half-written


def test_a_backend_without_gpus_refuses_the_step_at_init(gpu_node: Node) -> None:
    api = gpu_node.api
    body = pipeline(api, gpus=1)  # the default backend: local, no GPUs declared
    error = assert_error(api.post("/pipeline/init", body), 400, "backend_cannot_enforce")
    assert (error["field"], error["backend"], error["step"]) == ("gpus", "local", "infer")
    assert "offers no GPUs" in error["message"] and "local" in error["message"]
    assert_error(api.get(f"/pipeline/{body['name']}"), 404)


def test_a_backend_with_gpus_takes_up_to_its_count(gpu_node: Node) -> None:
    api = gpu_node.api
    listed = {b["name"]: b["capabilities"] for b in api.ok(api.get("/backends"))}
    assert listed["local"]["gpus"] == 0 and "gpus" not in listed["local"]["enforces"]
    assert listed["gpu"]["gpus"] == GPUS and "gpus" in listed["gpu"]["enforces"]
    too_many = pipeline(api, gpus=GPUS + 1, backend="gpu")
    error = assert_error(api.post("/pipeline/init", too_many), 400, "step_rejected")
    assert (error["field"], error["backend"]) == ("gpus", "gpu")
    assert "MAO_BACKEND_GPU_GPUS" in error["message"]
    fits = pipeline(api, gpus=GPUS, backend="gpu")
    api.ok(api.post("/pipeline/init", fits))
    (step,) = api.ok(api.get(f"/pipeline/{fits['name']}"))["steps"]
    assert step["gpus"] == GPUS
    shown = maoctl(gpu_node.service.url, "backend", "list")
    assert shown.exit_code == 0, shown.output
    assert "gpus" in shown.output, shown.output
    as_json = maoctl(gpu_node.service.url, "backend", "list", "--json")
    assert {b["name"]: b["capabilities"]["gpus"] for b in json.loads(as_json.output)} == {"local": 0, "gpu": GPUS}


def test_the_engine_gets_the_device_requests(gpu_node: Node) -> None:
    """No NVIDIA runtime on this machine: the engine refuses to start the container it was asked for
    with GPUs (`could not select device driver "nvidia" with capabilities: [[gpu]]`: proof that the
    DeviceRequests reached it), so the attempt fails with the engine's word, is not retried (a retry
    cannot pass), and nothing is left on the engine."""
    api = gpu_node.api
    body = pipeline(api, gpus=1, backend="gpu", retries=1, retry_delay=0)
    api.ok(api.post("/pipeline/init", body))
    run = api.run(body["name"])
    assert run["status"] == "failed", run
    (step,) = run["steps"]
    text = json.dumps(step)
    # The engine's refusal is the request's, not a passing failure: one attempt, whatever retries says.
    (attempt,) = step["attempts"]
    assert attempt["status"] == "failed" and "no NVIDIA runtime" in attempt["error"], attempt
    assert 'could not select device driver \\"nvidia\\" with capabilities: [[gpu]]' in text, step
    client = docker.from_env()
    try:
        left = client.containers.list(ignore_removed=True, all=True, filters={"label": f"mao.run={run['id']}"})
    finally:
        client.close()
    assert left == []


def test_a_run_after_the_backends_gpus_went_is_a_400(gpu_node: Node) -> None:
    api = gpu_node.api
    body = pipeline(api, gpus=1, backend="gpu")
    api.ok(api.post("/pipeline/init", body))
    gpu_node.service.process.env["MAO_BACKEND_GPU_GPUS"] = "0"
    try:
        gpu_node.restart()
        error = assert_error(api.post("/pipeline/run", {"name": body["name"]}), 400, "backend_cannot_enforce")
        assert (error["field"], error["backend"]) == ("gpus", "gpu")
    finally:
        gpu_node.service.process.env["MAO_BACKEND_GPU_GPUS"] = str(GPUS)
        gpu_node.restart()
