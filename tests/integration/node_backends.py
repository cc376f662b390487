"""The backends a test node can run steps on, as the node-level tests configure and watch them:
for each, the node's settings (``MAO_BACKENDS`` and its ``MAO_BACKEND_<NAME>_*``) and how to see,
identify and remove its objects from outside MAO, with the engine's own tools (Docker, Slurm's
commands, the fake Kubernetes API). Used by test_node_contract.py and test_backends_e2e.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import servers
from tests.integration.conftest import Node


@dataclass(frozen=True)
class BackendUnderTest:
    """One backend the contract runs against: ``name`` (in MAO_BACKENDS), the node's extra settings,
    and what a test sees of it from outside MAO (with the engine's own tools)."""

    name: str
    settings: Callable[[pytest.FixtureRequest, Path], dict[str, str]]
    # The engine's objects of a run (their names).
    objects: Callable[[str], list[str]]
    # The engine's own id of the object ``name`` (None: gone).
    engine_id: Callable[[str], str | None]
    # Remove the object ``name`` as an operator would.
    remove_from_outside: Callable[[str], None]
    # The folder a running tool writes (its /usr/src/app/data): (node, dataset, step, object name).
    tool_folder: Callable[[Node, str, str, str], Path]
    # The run's attempt objects a test names (None: ``objects``): on Kubernetes the Jobs only, not the
    # Secret the backend makes just before its Job (a name taken then named no Job, under load).
    named: Callable[[str], list[str]] | None = None

    def the_objects(self, run_id: str) -> list[str]:
        return (self.named or self.objects)(run_id)


def _docker(use: Callable[[Any], Any]) -> Any:
    client = docker.from_env()
    try:
        return use(client)
    finally:
        client.close()


def _labelled(run_id: str) -> dict[str, str]:
    return {"label": f"mao.run={run_id}"}


def _docker_objects(run_id: str) -> list[str]:
    return _docker(lambda c: [x.name for x in c.containers.list(all=True, ignore_removed=True, filters=_labelled(run_id))])


def _docker_id(name: str) -> str | None:
    def look(client: Any) -> str | None:
        found = client.containers.list(all=True, ignore_removed=True, filters={"name": f"^/{name}$"})
        return found[0].id if found else None

    return _docker(look)


def _work_folder(node: Node, dataset: str, step: str, _name: str) -> Path:
    return node.data_dir / "work" / dataset / f"{step}-{node.name}"


def _swarm_settings(request: pytest.FixtureRequest, folder: Path) -> dict[str, str]:
    request.getfixturevalue("swarm")  # the machine's engine as a single-node swarm, for this session
    root = folder / "swarm-shared"
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    return {
        "MAO_BACKENDS": "local=docker,cluster=swarm",
        "MAO_BACKEND_CLUSTER_SHARED_ROOT": str(root),
        # This engine does not run with --no-new-privileges (tests/integration/backends/test_swarm.py).
        "MAO_BACKEND_CLUSTER_ACCEPT_WITHOUT_NO_NEW_PRIVILEGES": "1",
        "MAO_BACKEND_CLUSTER_OUTPUT_SETTLE_SECONDS": "0",  # one host: no network file system
    }


def _swarm_objects(run_id: str) -> list[str]:
    def look(client: Any) -> list[str]:
        services = [s.name for s in client.services.list(filters=_labelled(run_id))]
        return services + [
            x.name
            for x in client.containers.list(all=True, ignore_removed=True, filters=_labelled(run_id))
            if "com.docker.swarm.service.name" in (x.labels or {})
        ]

    return _docker(look)


def _swarm_id(name: str) -> str | None:
    return _docker(lambda c: next((s.id for s in c.services.list(filters={"name": name}) if s.name == name), None))


_SLURM: list[Any] = []  # the session's single-node Slurm (tests/servers/slurm.py), once a node uses it


def _slurm_settings(request: pytest.FixtureRequest, folder: Path) -> dict[str, str]:
    cluster = request.getfixturevalue("slurm")  # skipped, saying why, where Slurm cannot run
    _SLURM[:] = [cluster]
    root = folder / "slurm-shared"
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    return {
        "MAO_BACKENDS": "local=docker,hpc=slurm",
        "MAO_BACKEND_HPC_SHARED_ROOT": str(root),
        "MAO_BACKEND_HPC_SLURM_CONF": str(cluster.conf),
        "MAO_BACKEND_HPC_SLURM_BIN": str(cluster.bin_dir),
        "MAO_BACKEND_HPC_JOBCOMP_FILE": str(cluster.jobcomp),
        "MAO_BACKEND_HPC_PARTITION": cluster.partition,
        "MAO_BACKEND_HPC_OUTPUT_SETTLE_SECONDS": "0",  # one host: no network file system
        "MAO_BACKEND_HPC_POLL_INTERVAL": "0.25",
    }


def _slurm_jobs() -> list[Any]:
    from orchestrator.executors.slurm_answers import SQUEUE_FORMAT, parse_squeue

    answer = _SLURM[0].command("squeue", "--noheader", "--states=all", f"--Format={SQUEUE_FORMAT}")
    return parse_squeue(answer.stdout)


def _slurm_objects(run_id: str) -> list[str]:
    jobs = [j.name for j in _slurm_jobs() if (j.labels or {}).get("mao.run") == run_id and not j.has_ended]
    return jobs + _docker_objects(run_id)  # a job's container too, while it runs


def _slurm_id(name: str) -> str | None:
    return next((j.job_id for j in _slurm_jobs() if j.name == name), None)


def _slurm_cancel(name: str) -> None:
    job = _slurm_id(name)
    if job is not None:
        _SLURM[0].command("scancel", job)  # an operator's scancel


_KUBE: list[Any] = []  # the session's fake Kubernetes API (tests/servers/kube_fake.py), once a node uses it
KUBE_NAMESPACE = "mao-node"


def _kube_settings(request: pytest.FixtureRequest, folder: Path) -> dict[str, str]:
    fake = request.getfixturevalue("kube_fake")
    _KUBE[:] = [fake]
    # The pods' staging containers reach this node's own staging routes (the fake's kubelet runs them
    # on the host's network): the node's port is chosen here, before it starts.
    port = servers.free_port()
    return {
        "MAO_API_PORT": str(port),
        "MAO_BACKENDS": "local=docker,kube=kubernetes",
        "MAO_BACKEND_KUBE_KUBECONFIG": str(fake.kubeconfig),
        "MAO_BACKEND_KUBE_NAMESPACE": KUBE_NAMESPACE,
        "MAO_BACKEND_KUBE_STAGING_IMAGE": request.getfixturevalue("staging_image"),
        "MAO_BACKEND_KUBE_STAGING_URL": f"http://127.0.0.1:{port}",
        "MAO_BACKEND_KUBE_POD_PIDS_LIMIT": "512",  # the fake kubelet's
        "MAO_BACKEND_KUBE_CANCEL_GRACE_SECONDS": "1",
        "MAO_BACKEND_KUBE_POLL_INTERVAL": "0.5",
    }


def _kube_items(kind: str, selector: str) -> list[dict[str, Any]]:
    group = "/apis/batch/v1" if kind == "jobs" else "/api/v1"
    path = f"{group}/namespaces/{KUBE_NAMESPACE}/{kind}?labelSelector={selector}"
    return list(_KUBE[0].call("GET", path, token=True)["items"])


def _kube_selector(run_id: str) -> str:
    from orchestrator.executors.kube_pod import label_value

    return f"mao.run={label_value(run_id)}"


def _kube_jobs(run_id: str) -> list[str]:
    return [item["metadata"]["name"] for item in _kube_items("jobs", _kube_selector(run_id))]


def _kube_objects(run_id: str) -> list[str]:
    """The run's Jobs (by name, first), pods and Secrets in the API, and the containers the fake's
    kubelet runs for them (labelled with their pod, whose name holds the run's)."""
    from tests.servers.kube_fake_kubelet import LABEL

    selector = _kube_selector(run_id)
    jobs = _kube_jobs(run_id)
    found = [f"{kind}/{item['metadata']['name']}" for kind in ("pods", "secrets") for item in _kube_items(kind, selector)]
    part = "-" + "".join(c for c in run_id.lower() if c.isalnum())[:12] + "-"
    containers = _docker(
        lambda c: [x.name for x in c.containers.list(all=True, ignore_removed=True, filters={"label": LABEL})
                   if part in (x.labels or {}).get(f"{LABEL}.pod", "")]
    )  # fmt: skip
    return jobs + found + containers


def _kube_id(name: str) -> str | None:
    job = next((j for j in _kube_items("jobs", f"job-name={name}") if j["metadata"]["name"] == name), None)
    return None if job is None else str(job["metadata"]["uid"])


def _kube_pods(name: str) -> list[dict[str, Any]]:
    return [p for p in _kube_items("pods", f"job-name={name}") if p["metadata"]["labels"].get("job-name") == name]


def _kube_delete_pod(name: str) -> None:
    """``kubectl delete pod`` of the Job's pod."""
    for pod in _kube_pods(name):
        _KUBE[0].call("DELETE", f"/api/v1/namespaces/{KUBE_NAMESPACE}/pods/{pod['metadata']['name']}", token=True)


def _kube_folder(_node: Node, _dataset: str, _step: str, name: str) -> Path:
    """The pod's ``data`` emptyDir, a host folder of the fake's kubelet."""
    (pod,) = servers.wait_until(lambda: _kube_pods(name), timeout=60, what="the Job's pod")
    return _KUBE[0].kubeconfig.parent / "kubelet" / f"{KUBE_NAMESPACE}-{pod['metadata']['name']}" / "data"


def _shared_folder(kind: str) -> Callable[[Node, str, str, str], Path]:
    def folder(node: Node, _dataset: str, _step: str, name: str) -> Path:
        return node.data_dir.parent / f"{node.data_dir.name}-engine" / f"{kind}-shared" / name / "output"

    return folder


# Every backend kind the node-level contract runs against.
BACKENDS = [
    BackendUnderTest(
        "local", lambda request, folder: {}, _docker_objects, _docker_id,
        lambda name: _docker(lambda c: c.containers.get(name).remove(force=True)), _work_folder,
    ),
    BackendUnderTest(
        "cluster", _swarm_settings, _swarm_objects, _swarm_id,
        lambda name: _docker(lambda c: c.services.get(name).remove()), _shared_folder("swarm"),
    ),
    BackendUnderTest("hpc", _slurm_settings, _slurm_objects, _slurm_id, _slurm_cancel, _shared_folder("slurm")),
    BackendUnderTest("kube", _kube_settings, _kube_objects, _kube_id, _kube_delete_pod, _kube_folder, _kube_jobs),
]  # fmt: skip
