"""End to end across backends, through one node that has all four (local docker, a swarm, Slurm, the
fake Kubernetes API): a pipeline whose steps run on docker, then Slurm, then Kubernetes, each reading
the dataset the step before wrote, every output committed and merged into ``ground-truth`` with its
provenance; and a fan-out of 20 shards on the swarm, one of whose services is removed from outside
while it runs (that shard is retried, the others go on), all 20 outputs landing in ``ground-truth``.

The contract of each backend alone is test_node_contract.py (a swarm service removed from outside
and retried is its test_an_object_removed_from_outside_is_a_lost_node_and_retried[cluster]).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import gitutil, servers
from tests.api import Api, unique
from tests.integration.conftest import Node, orchestrator_env
from tests.integration.node_backends import BACKENDS

APP = "/usr/src/app"
ENDED = ("succeeded", "failed", "cancelled")
KINDS = {"local": "docker", "cluster": "swarm", "hpc": "slurm", "kube": "kubernetes"}


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    """One node with every backend of the node-level contract, each configured as the contract's."""
    name = unique("e2e")
    settings: dict[str, str] = {}
    for backend in BACKENDS:
        settings.update(backend.settings(request, servers_tmp / f"{name}-engine"))
    settings["MAO_BACKENDS"] = ",".join(f"{b.name}={KINDS[b.name]}" for b in BACKENDS)
    env = orchestrator_env(name, servers_tmp / name, etcd.endpoint, executor, **settings)
    started = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), servers_tmp / name)
    yield started
    started.service.stop()


def wait(api: Api, run_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.ok(api.get(f"/runs/{run_id}"))
        if run["status"] in ENDED:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not end within {timeout} s")


def test_the_node_has_every_backend_healthy(node: Node) -> None:
    listed = {b["name"]: b for b in node.api.ok(node.api.get("/backends"))}
    assert {name: listed[name]["kind"] for name in KINDS} == KINDS
    assert all(listed[name]["health"]["ok"] for name in KINDS), listed


@pytest.mark.slow
def test_a_pipeline_runs_on_docker_then_slurm_then_kubernetes(node: Node) -> None:
    """Each step reads the previous one's output dataset as its input, adds a line, and writes its own;
    every output is committed on its node branch and merged into ground-truth with its provenance."""
    api = node.api
    tool = unique("tool")
    api.tool(tool)
    chain = [("local", unique("a")), ("hpc", unique("b")), ("kube", unique("c"))]
    repos = {dataset: api.local_dataset(dataset) for _, dataset in chain}
    steps: list[dict[str, Any]] = []
    for position, (backend, dataset) in enumerate(chain):
        read = f"cat {APP}/input/chain.txt > {APP}/data/chain.txt; " if position else ""
        step: dict[str, Any] = {
            "name": f"on-{backend}", "tool": tool, "output_dataset": dataset, "backend": backend,
            "cmd": ["sh", "-c", f'{read}echo "{backend} uid=$(id -u)" >> {APP}/data/chain.txt; echo done on {backend}'],
        }  # fmt: skip
        if position:
            step["input_dataset"] = chain[position - 1][1]
        steps.append(step)
    pipeline = unique("e2e-chain")
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
    run = wait(api, api.run(pipeline, wait=False)["id"])
    assert run["status"] == "succeeded", run

    lines: list[str] = []
    for position, ((backend, dataset), step) in enumerate(zip(chain, run["steps"], strict=True)):
        (attempt,) = step["attempts"]
        assert (attempt["status"], attempt["backend"]) == ("succeeded", backend), step
        assert attempt["node"] and attempt["queued_seconds"] is not None
        repo = repos[dataset]
        lines.append(f"{backend} uid=")
        content = gitutil.show(repo, "ground-truth", "chain.txt")
        assert [line.split("=")[0] + "=" for line in content.splitlines()] == lines, content
        assert all(line.split("=")[1] != "0" for line in content.splitlines())  # never root
        # The step's commit is merged into ground-truth, with its provenance.
        commit = step["output_commit"]
        gitutil.git(repo, "merge-base", "--is-ancestor", commit, "ground-truth")
        trailers = gitutil.trailers(repo, commit)
        assert trailers["MAO-Run"] == run["id"] and trailers["MAO-Step"] == step["name"]
        assert trailers["MAO-Tool-Image"] == step["image_id"] and "sha256:" in step["image_id"]
        if position:
            # It read the commit of ground-truth that the step before merged.
            before = repos[chain[position - 1][1]]
            assert trailers["MAO-Input-Commit"] == step["input_commit"]
            gitutil.git(before, "merge-base", "--is-ancestor", step["input_commit"], "ground-truth")
            previous = gitutil.show(before, step["input_commit"], "chain.txt")
            assert content.startswith(previous)
        log = api.get(f"/runs/{run['id']}/log", step=step["name"])
        assert log.status_code == 200 and f"done on {backend}" in log.text


@pytest.mark.slow
def test_a_20_shard_fan_out_on_swarm_survives_a_service_removed_from_outside(node: Node) -> None:
    """split_size 1 over 20 files, 4 at a time; shard 7's first attempt waits until its service is
    removed (docker service rm): that attempt is node_lost, its retry succeeds, the others are untouched."""
    api = node.api
    tool, raw, out = unique("tool"), unique("raw"), unique("out")
    api.tool(tool)
    api.local_dataset(raw)
    repo = api.local_dataset(out)
    make = {
        "name": "make", "tool": tool, "output_dataset": raw, "backend": "local",
        "cmd": ["sh", "-c", f"for i in $(seq -w 1 20); do echo $i > {APP}/data/in$i.txt; done"],
    }  # fmt: skip
    script = (
        f'if [ "$MAO_SHARD" = 7 ] && [ "$MAO_ATTEMPT" = 1 ]; then echo waiting; sleep 300; fi; '
        f"for f in {APP}/input/*.txt; do n=$(basename $f .txt); "
        f'echo "$(cat $f) shard $MAO_SHARD" > {APP}/data/out-${{n#in}}.txt; done'
    )
    fan = {
        "name": "fan", "tool": tool, "input_dataset": raw, "output_dataset": out, "backend": "cluster",
        "cmd": ["sh", "-c", script], "retries": 1, "retry_delay": 0.1,
        "fan_out": {"glob": "*.txt", "split_size": 1, "max_parallel": 4},
    }  # fmt: skip
    pipeline = unique("e2e-fan")
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [make, fan]}))
    run_id = api.run(pipeline, wait=False)["id"]

    def shard_seven() -> list[Any]:
        client = docker.from_env()
        try:
            labels = [f"mao.run={run_id}", "mao.shard=7", "mao.attempt=1"]
            return [s for s in client.services.list(filters={"label": labels}) if _running(s)]
        finally:
            client.close()

    (service,) = servers.wait_until(shard_seven, timeout=300, what="shard 7's first attempt running on the swarm")
    service.remove()  # as an operator would: docker service rm

    run = wait(api, run_id)
    assert run["status"] == "succeeded", run
    fanned = run["steps"][1]
    assert fanned["shards"]["count"] == 20 and fanned["shards"]["succeeded"] == 20, fanned["shards"]
    assert {a["backend"] for a in fanned["attempts"]} == {"cluster"}
    seventh = sorted((a["attempt"], a["status"]) for a in fanned["attempts"] if a["shard"] == 7)
    assert seventh == [(1, "node_lost"), (2, "succeeded")], seventh
    others = [a for a in fanned["attempts"] if a["shard"] != 7 and not a.get("speculative")]
    assert len(others) == 19 and {a["status"] for a in others} == {"succeeded"}
    files = sorted(gitutil.git(repo, "ls-tree", "--name-only", "ground-truth").split())
    assert files == [f"out-{i:02d}.txt" for i in range(1, 21)]
    assert gitutil.show(repo, "ground-truth", "out-07.txt") == "07 shard 7\n"
    trailers = gitutil.trailers(repo, fanned["output_commit"])
    assert trailers["MAO-Run"] == run_id and trailers["MAO-Shards"] == "20"
    gitutil.git(repo, "merge-base", "--is-ancestor", fanned["output_commit"], "ground-truth")


def _running(service: Any) -> bool:
    """Whether the service's task has started its container (so that removing it hits a running tool)."""
    return any(task["Status"]["State"] == "running" for task in service.tasks())
