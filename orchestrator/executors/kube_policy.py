"""What a Kubernetes backend can do and whether a step may run there: the cluster's GPUs,
``capabilities``, ``health``, the image reference, and ``validate``."""

from __future__ import annotations

import contextlib
import time

from .kube_api import KubeApi
from .kube_pod import BACKEND_LABEL, env_key_problem, label_value, managed_selector
from .kube_settings import KubernetesSettings
from .seam import BackendRejected, BackendUnavailable, Capabilities, ContainerSpec, DataMode, Health

KIND = "kubernetes"
MIN_MEMORY = 4 * 1024 * 1024
_FACTS_TTL = 60.0


class KubePolicy:
    """The rules of backend ``name``: asked by ``KubernetesBackend``, which runs the attempts."""

    def __init__(self, name: str, settings: KubernetesSettings, api: KubeApi) -> None:
        self.name = name
        self.settings = settings
        self._api = api
        self._gpus: tuple[float, int | None] | None = None

    def capabilities(self) -> Capabilities:
        enforces = {"memory", "cpus", "gpus", "placement", "start_timeout", "no_new_privileges", "read_only_root"}
        notes = [
            "label the namespace with the restricted Pod Security profile "
            "(pod-security.kubernetes.io/enforce=restricted): MAO's pods pass it, anything else is refused",
            "per-pod process limit: Kubernetes has none in the pod spec; it is the kubelet's podPidsLimit"
            + (
                f" ({self.settings.pod_pids_limit}, as the operator states in POD_PIDS_LIMIT)"
                if self.settings.pod_pids_limit
                else " (not stated: set POD_PIDS_LIMIT once the nodes enforce one)"
            ),
            "memory: a node with swap lets a tool use more than its limit unless the kubelet forbids swap",
            "a step's private env values are in a per-attempt Secret: whoever may read Secrets in the "
            "namespace may read them",
            "pods must reach the orchestrator's staging routes at STAGING_URL; a NetworkPolicy should "
            "let them reach nothing else",
        ]
        if self.settings.pod_pids_limit:
            enforces.add("pids")
        gpus = self._known_gpus()
        if gpus == 0:
            enforces.discard("gpus")
        return Capabilities(
            kind=KIND,
            data_modes=frozenset({DataMode.FETCH}),
            enforces=frozenset(enforces),
            gpus=gpus,
            notes=tuple(notes),
        )

    async def health(self) -> Health:
        details = {
            "namespace": self.settings.namespace,
            "staging_url": self.settings.staging_url,
            "staging_image": self.settings.staging_image,
        }
        try:
            details["server"] = await self._api.version()
            await self._api.list_jobs(managed_selector() + f",{BACKEND_LABEL}={label_value(self.name)}")
        except BackendUnavailable as exc:
            return Health(ok=False, message=exc.message, details=details)
        gpus = await self.cluster_gpus()
        details["gpus"] = "unknown (the account may not list nodes; GPUS states them)" if gpus is None else str(gpus)
        return Health(ok=True, message="ok", details=details)

    async def cluster_gpus(self) -> int | None:
        """The most GPUs one node has: the operator's ``GPUS`` where set, else the nodes' word."""
        if self.settings.gpus is not None:
            return self.settings.gpus
        if self._gpus is None or time.monotonic() - self._gpus[0] > _FACTS_TTL:
            self._gpus = (time.monotonic(), await self._api.gpus())
        return self._gpus[1]

    def _known_gpus(self) -> int | None:
        if self.settings.gpus is not None:
            return self.settings.gpus
        return self._gpus[1] if self._gpus is not None else None

    async def resolve_image(self, image: str) -> str | None:
        """The reference as given: only the nodes' runtimes resolve it (a digest reference, name@sha256:...,
        is the way to be sure every node runs the same bits)."""
        return image

    async def validate(self, spec: ContainerSpec) -> None:
        where = f"(backend {self.name!r}, kind kubernetes)"
        problem: tuple[str, str] | None = None
        if spec.user[0] == 0 or spec.user[1] == 0:
            problem = "user", "user: tools never run as root (uid or gid 0)"
        elif spec.docker_socket:
            problem = "docker_socket", "docker_socket: the Docker socket is never offered on a cluster"
        elif spec.limits.memory is not None and spec.limits.memory < MIN_MEMORY:
            problem = "memory", f"memory: at least {MIN_MEMORY} bytes"
        elif any("\0" in part for part in (*(spec.cmd or ()), *spec.env, *spec.env.values())):
            problem = "cmd", "cmd and env may not hold NUL characters"
        else:
            for key in spec.secrets:
                if env_problem := env_key_problem(key):
                    problem = "env", env_problem
            for key, value in spec.placement.items():
                if label_value(value) != value or not key or len(key) > 253:
                    problem = "placement", f"placement: {key}={value!r} is not a node label Kubernetes accepts"
        if problem is None and spec.limits.gpus:
            with contextlib.suppress(BackendUnavailable):
                # Unknown (nodes not listable, no GPUS): the scheduler decides, within start_timeout.
                most = await self.cluster_gpus()
                if most == 0:
                    problem = "gpus", f"gpus: the cluster's nodes offer no {self.settings.gpu_resource}"
                elif most is not None and spec.limits.gpus > most:
                    problem = "gpus", (
                        f"gpus: {spec.limits.gpus} asked, and no node of the cluster has more than {most} "
                        f"{self.settings.gpu_resource}"
                    )
        if problem is not None:
            raise BackendRejected(self.name, problem[0], f"{problem[1]} {where}")
