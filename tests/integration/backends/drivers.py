"""One driver per backend kind: how the contract suite makes that backend, and what it does to the
engine behind MAO's back (remove an object from outside, list what is left).

Adding a kind to the suite is one driver here and one line in ``DRIVERS``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.executors.docker import DockerBackend
from orchestrator.executors.fetch import FetchExchange
from orchestrator.executors.kube_api import KubeApi
from orchestrator.executors.kube_pod import label_value
from orchestrator.executors.kubernetes import KubernetesBackend, KubernetesSettings
from orchestrator.executors.seam import INSTANCE_LABEL, MANAGED_LABEL, Backend, Handle
from orchestrator.executors.slurm import SlurmBackend, SlurmSettings
from orchestrator.executors.slurm_answers import SQUEUE_FORMAT, parse_squeue
from orchestrator.executors.swarm import SERVICE_NAME_LABEL, SwarmBackend, SwarmSettings
from tests import servers
from tests.servers.kube_fake import KubeFake
from tests.servers.staging_server import StagingServer


class Driver(Protocol):
    kind: str
    # The uid the tools run as: the orchestrator's own unless it is root (as Settings.tool_user).
    tool_user: tuple[int, int]
    # A step placement this engine accepts and no node of it can satisfy now.
    unschedulable_placement: dict[str, str]

    def make(self, name: str, **settings: Any) -> Backend: ...

    async def remove_from_outside(self, handle: Handle) -> None:
        """Remove the attempt's object as an operator would, with the engine's own tools."""

    async def leftovers(self, instance: str) -> list[str]:
        """Everything of ``instance`` still on the engine (objects and their containers)."""

    def prepare(self, folder: Path) -> None:
        """Ready an attempt's input and output folders under ``folder`` for the tool (data mode
        ``local``: the engine hands them over itself, as the run engine's datasets do)."""


def tool_user() -> tuple[int, int]:
    return (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())


@dataclass
class SwarmDriver:
    """The machine's Docker engine as a single-node swarm (the ``swarm`` session fixture)."""

    docker: Any  # docker.DockerClient
    shared_root: Path
    kind: str = "swarm"
    tool_user: tuple[int, int] = tool_user()
    unschedulable_placement: dict[str, str] = field(default_factory=lambda: {"mao.test.nowhere": "x"})

    def make(self, name: str, **settings: Any) -> Backend:
        values: dict[str, Any] = {
            "shared_root": self.shared_root,
            # This engine does not run with --no-new-privileges (test_swarm.py checks the refusal).
            "accept_without_no_new_privileges": True,
            "output_settle_seconds": 0,  # one host: no network file system to wait for
            **settings,
        }
        return SwarmBackend(name, SwarmSettings.model_validate(values))

    async def remove_from_outside(self, handle: Handle) -> None:
        def remove() -> None:
            self.docker.services.get(handle.name).remove()  # docker service rm

        await asyncio.to_thread(remove)

    async def leftovers(self, instance: str) -> list[str]:
        def look() -> list[str]:
            mao = [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={instance}"]
            services = [s.name for s in self.docker.services.list(filters={"label": mao})]
            containers = [
                c.name
                for c in self.docker.containers.list(ignore_removed=True, all=True, filters={"label": mao})
                if SERVICE_NAME_LABEL in (c.labels or {})
            ]
            return services + containers

        return await asyncio.to_thread(look)


@dataclass
class DockerDriver:
    """The executor on this host (the session's ``executor``), data mode ``local``."""

    docker: Any  # docker.DockerClient
    executor: Any  # tests.servers.ServiceProcess
    kind: str = "docker"
    tool_user: tuple[int, int] = tool_user()
    # No placement here (init refuses it): the tests that need one skip.
    unschedulable_placement: dict[str, str] = field(default_factory=dict)

    def make(self, name: str, **settings: Any) -> Backend:
        return DockerBackend(
            name, self.executor.url, self.executor.token, lambda path: path, settings.get("start_timeout")
        )

    async def remove_from_outside(self, handle: Handle) -> None:
        await asyncio.to_thread(lambda: self.docker.containers.get(handle.name).remove(force=True))  # docker rm -f

    async def leftovers(self, instance: str) -> list[str]:
        def look() -> list[str]:
            mao = [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={instance}"]
            return [c.name for c in self.docker.containers.list(all=True, ignore_removed=True, filters={"label": mao})]

        return await asyncio.to_thread(look)

    def prepare(self, folder: Path) -> None:
        if os.getuid() != 0:
            return  # the tool runs as this user already
        for path in (folder / "input", folder / "output"):
            for item in (path, *path.iterdir()):
                os.chown(item, *self.tool_user)


@dataclass
class SlurmDriver:
    """The private single-node Slurm of the ``slurm`` session fixture, running containers on the
    machine's Docker engine."""

    cluster: servers.SlurmCluster
    docker: Any  # docker.DockerClient
    shared_root: Path
    kind: str = "slurm"
    tool_user: tuple[int, int] = tool_user()
    # A node feature only a DOWN node has (tests/servers/slurm.py): the job pends.
    unschedulable_placement: dict[str, str] = field(
        default_factory=lambda: {"constraint": servers.slurm.GHOST_FEATURE}
    )

    def make(self, name: str, **settings: Any) -> Backend:
        values: dict[str, Any] = {
            "shared_root": self.shared_root,
            "slurm_conf": self.cluster.conf,
            "slurm_bin": self.cluster.bin_dir,
            "jobcomp_file": self.cluster.jobcomp,
            "partition": self.cluster.partition,
            "output_settle_seconds": 0,  # one host: no network file system to wait for
            "poll_interval": 0.25,
            **settings,
        }
        return SlurmBackend(name, SlurmSettings.model_validate(values))

    async def remove_from_outside(self, handle: Handle) -> None:
        await asyncio.to_thread(self.cluster.command, "scancel", str(handle.engine_id))  # an operator's scancel

    async def leftovers(self, instance: str) -> list[str]:
        def look() -> list[str]:
            answer = self.cluster.command(
                "squeue", "--noheader", "--states=all", f"--Format={SQUEUE_FORMAT}"
            )
            jobs = [
                f"job {job.job_id}"
                for job in parse_squeue(answer.stdout)
                if job.instance == instance and not job.has_ended
            ]
            mao = [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={instance}"]
            containers = [c.name for c in self.docker.containers.list(ignore_removed=True, all=True, filters={"label": mao})]
            folders = [
                path.name
                for path in self.shared_root.glob("mao-*/labels.json")
                if f'"{INSTANCE_LABEL}": "{instance}"' in path.read_text()
            ]
            return jobs + containers + folders

        return await asyncio.to_thread(look)


@dataclass
class KubeFakeDriver:
    """The fake Kubernetes API (tests/servers/kube_fake.py), whose pods run in the machine's Docker
    engine, with the orchestrator's staging routes on loopback (fetch data mode, end to end)."""

    fake: KubeFake
    staging: StagingServer
    staging_image: str
    state_dir: Path
    namespace: str = "mao-contract"
    kind: str = "kubernetes"
    tool_user: tuple[int, int] = tool_user()
    # A node label the fake's one node lacks: the pod stays Pending, PodScheduled=False (Unschedulable).
    unschedulable_placement: dict[str, str] = field(default_factory=lambda: {"mao.test.nowhere": "x"})

    def make(self, name: str, **settings: Any) -> Backend:
        values: dict[str, Any] = {
            "kubeconfig": self.fake.kubeconfig,
            "namespace": self.namespace,
            "staging_image": self.staging_image,
            "staging_url": self.staging.url,
            "pod_pids_limit": 512,  # the fake kubelet's
            "cancel_grace_seconds": 1,
            "poll_interval": 0.5,
            **settings,
        }
        return KubernetesBackend(
            name,
            KubernetesSettings.model_validate(values),
            exchange=FetchExchange(self.staging.root),
            state_dir=self.state_dir / name,
        )

    async def remove_from_outside(self, handle: Handle) -> None:
        """``kubectl delete pod`` of the attempt's pod."""
        base = f"/api/v1/namespaces/{self.namespace}/pods"

        def remove() -> None:
            pods = self.fake.call("GET", f"{base}?labelSelector=job-name={handle.name}", token=True)["items"]
            for pod in pods:
                self.fake.call("DELETE", f"{base}/{pod['metadata']['name']}", token=True)

        await asyncio.to_thread(remove)

    async def leftovers(self, instance: str) -> list[str]:
        def look() -> list[str]:
            answer = self.fake.call("GET", f"/fake/objects?instance={label_value(instance)}")
            return list(answer["objects"]) + list(answer["containers"])

        return await asyncio.to_thread(look)


@dataclass
class RealKubeDriver:
    """A real cluster named by MAO_TEST_KUBECONFIG (docs/backends.md#the-contract-suite-on-a-real-cluster)."""

    staging: StagingServer
    state_dir: Path
    kind: str = "kubernetes"
    tool_user: tuple[int, int] = (65534, 65534)
    unschedulable_placement: dict[str, str] = field(default_factory=lambda: {"mao.test.nowhere": "x"})

    @property
    def image(self) -> str:
        return os.environ["MAO_TEST_KUBE_IMAGE"]

    @property
    def namespace(self) -> str:
        return os.environ.get("MAO_TEST_KUBE_NAMESPACE", "mao-test")

    def settings(self, **settings: Any) -> KubernetesSettings:
        values: dict[str, Any] = {
            "kubeconfig": os.environ["MAO_TEST_KUBECONFIG"],
            "namespace": self.namespace,
            "staging_image": self.image,
            "staging_url": os.environ["MAO_TEST_KUBE_STAGING_URL"],
            **settings,
        }
        return KubernetesSettings.model_validate(values)

    def make(self, name: str, **settings: Any) -> Backend:
        return KubernetesBackend(
            name, self.settings(**settings), exchange=FetchExchange(self.staging.root), state_dir=self.state_dir / name
        )

    async def remove_from_outside(self, handle: Handle) -> None:
        api = KubeApi("outside", self.settings())
        await api.start()
        try:
            for pod in await api.pods_of(handle.name):
                await api._json("deleting a pod", api.core.delete_namespaced_pod, pod.metadata.name, self.namespace)
        finally:
            await api.close()

    async def leftovers(self, instance: str) -> list[str]:
        api = KubeApi("outside", self.settings())
        await api.start()
        try:
            selector = f"{INSTANCE_LABEL}={label_value(instance)}"
            jobs = [f"jobs/{j.metadata.name}" for j in await api.list_jobs(selector)]
            items, _ = await api.list_for_watch("pods", selector)
            secrets = [f"secrets/{name}" for name in await api.list_secrets(selector)]
            return jobs + [f"pods/{p['metadata']['name']}" for p in items] + secrets
        finally:
            await api.close()


def real_cluster(request: Any) -> Driver:
    missing = [v for v in ("MAO_TEST_KUBECONFIG", "MAO_TEST_KUBE_IMAGE", "MAO_TEST_KUBE_STAGING_LISTEN",
                           "MAO_TEST_KUBE_STAGING_URL") if not os.environ.get(v)]  # fmt: skip
    if missing:
        import pytest

        pytest.skip(f"no real Kubernetes cluster: {', '.join(missing)} not set (the fake API ran instead)")
    return RealKubeDriver(request.getfixturevalue("real_staging_server"), request.getfixturevalue("servers_tmp") / "kube-real")


# kind -> the session fixtures its driver needs, and how to build it from them.
DRIVERS: dict[str, Callable[..., Driver]] = {
    "docker": lambda request: DockerDriver(request.getfixturevalue("docker_engine"), request.getfixturevalue("executor")),
    "swarm": lambda request: SwarmDriver(
        request.getfixturevalue("docker_engine"), request.getfixturevalue("swarm_shared_root")
    ),
    "slurm": lambda request: SlurmDriver(
        request.getfixturevalue("slurm"),
        request.getfixturevalue("docker_engine"),
        request.getfixturevalue("slurm_shared_root"),
    ),
    "kubernetes": lambda request: KubeFakeDriver(
        request.getfixturevalue("kube_fake"),
        request.getfixturevalue("staging_server"),
        request.getfixturevalue("staging_image"),
        request.getfixturevalue("servers_tmp") / "kube-state",
    ),
    "kubernetes-real": real_cluster,
}
