"""What a swarm backend can do and whether a step may run there: the engine's facts (manager, nodes,
no-new-privileges, version), ``capabilities``, ``health``, the image reference, and ``validate``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ..config.backends.swarm import SwarmSettings
from .engine_api import EngineApi, EngineError, EngineNotFound
from .seam import BackendRejected, BackendUnavailable, Capabilities, ContainerSpec, DataMode, Health
from .staging import SharedStaging
from .swarm_service import image_reference, node_gpus, placement_problem

KIND = "swarm"
NNP_OPTION = "name=no-new-privileges"
MIN_MEMORY = 6 * 1024 * 1024  # the engine refuses less
FACTS_TTL = 30.0


@dataclass(frozen=True)
class Facts:
    """What the engine said about itself at ``at`` (monotonic)."""

    at: float
    manager: bool
    nodes: int
    no_new_privileges: bool
    max_node_cpus: float | None
    version: str = ""
    max_node_gpus: int = 0  # the most generic resources of the GPU kind one node announces

    @property
    def keeps_job_tasks(self) -> bool:
        """Docker before 23 keeps every finished job's task record (moby#44312, swarmkit#3112)."""
        major = self.version.split(".", 1)[0]
        return major.isdigit() and int(major) < 23


class SwarmPolicy:
    """The rules of backend ``name``: asked by ``SwarmBackend``, which runs the attempts."""

    def __init__(self, name: str, settings: SwarmSettings, api: EngineApi, staging: SharedStaging) -> None:
        self.name = name
        self.settings = settings
        self.staging = staging
        self._api = api
        self._facts: Facts | None = None

    async def facts(self, max_age: float = 0.0) -> Facts:
        facts = self._facts
        if facts is not None and time.monotonic() - facts.at <= max_age:
            return facts
        info = await self._api.call("GET", "/info", "reading the engine's information")
        swarm = info.get("Swarm") or {}
        manager = swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))
        cpus: list[float] = []
        gpus: list[int] = []
        if manager:
            for node in await self._api.call("GET", "/nodes", "listing the swarm's nodes") or []:
                nano = ((node.get("Description") or {}).get("Resources") or {}).get("NanoCPUs")
                cpus.append(int(nano) / 1e9 if nano else 0.0)
                gpus.append(node_gpus(node, self.settings.gpu_resource))
        options = [str(option).split(",", 1)[0] for option in info.get("SecurityOptions") or []]
        facts = Facts(
            at=time.monotonic(),
            manager=manager,
            nodes=len(cpus),
            no_new_privileges=NNP_OPTION in options,
            max_node_cpus=max(cpus) if any(cpus) else None,
            version=str(info.get("ServerVersion") or ""),
            max_node_gpus=max(gpus, default=0),
        )
        self._facts = facts
        return facts

    def capabilities(self) -> Capabilities:
        enforces = {"memory", "cpus", "pids", "placement", "start_timeout", "read_only_root"}
        notes = [
            "memory: Swarm cannot set a service's memory-swap: on a node with swap, a tool may use as "
            "much again in swap",
            "every node's Docker daemon must run with --no-new-privileges (only the manager's is checked)",
            "env values, private ones too, are readable by whoever may inspect services on the managers",
            "a finished job's exited containers on other nodes than the manager's stay until that node "
            "prunes them (moby#42789)",
        ]
        if self._facts is not None and self._facts.keeps_job_tasks:
            notes.append(
                f"Docker {self._facts.version} keeps every finished job's task record in the swarm's store and "
                "slows down as they pile up (moby#44312): Docker 23 or later, or a managers' restart now and then"
            )
        if self._facts is not None and self._facts.no_new_privileges:
            enforces.add("no_new_privileges")
        elif self.settings.accept_without_no_new_privileges:
            notes.insert(
                0, "no-new-privileges is NOT enforced (accepted by ACCEPT_WITHOUT_NO_NEW_PRIVILEGES)"
            )
        gpus = self.gpus()
        if gpus is None or gpus:  # unknown (the engine not asked yet): validate asks it
            enforces.add("gpus")
        if gpus:
            notes.append(
                f"gpus: reserved as the generic resource {self.settings.gpu_resource}; each GPU node's "
                "NVIDIA runtime must hand the reserved ones to the container (docs/backends.md#gpus)"
            )
        return Capabilities(
            kind=KIND,
            data_modes=frozenset({DataMode.SHARED}),
            enforces=frozenset(enforces),
            gpus=gpus,
            notes=tuple(notes),
        )

    def gpus(self) -> int | None:
        """The most GPUs one node can give a task: the operator's ``GPUS`` where set, else what the
        nodes announce (None until the engine has been asked)."""
        if self.settings.gpus is not None:
            return self.settings.gpus
        return self._facts.max_node_gpus if self._facts is not None else None

    async def health(self) -> Health:
        try:
            facts = await self.facts()
        except BackendUnavailable as exc:
            return Health(ok=False, message=exc.message)
        details = {
            "docker_host": self.settings.docker_host,
            "docker_version": facts.version,
            "shared_root": str(self.settings.shared_root),
            "gpus": str(self.gpus()),
        }
        problems = []
        if facts.manager:
            details["swarm"] = f"manager of {facts.nodes} node(s)"
        else:
            problems.append(
                f"the Docker engine at {self.settings.docker_host} is not a swarm manager: run `docker swarm "
                "init` there, or point the backend's DOCKER_HOST at a manager"
            )
        if facts.no_new_privileges:
            details["no_new_privileges"] = "enforced by the daemon"
        elif self.settings.accept_without_no_new_privileges:
            details["no_new_privileges"] = (
                f"NOT enforced; accepted by {self._setting('ACCEPT_WITHOUT_NO_NEW_PRIVILEGES')}"
            )
        else:
            details["no_new_privileges"] = "NOT enforced: steps are refused"
            problems.append(self._nnp_message())
        problem = await asyncio.to_thread(self.staging.root_problem)
        if problem:
            problems.append(problem)
        return Health(ok=not problems, message="; ".join(problems) or "ok", details=details)

    def _setting(self, key: str) -> str:
        return f"MAO_BACKEND_{self.name.upper()}_{key}"

    def _nnp_message(self) -> str:
        return (
            f"the Docker daemon at {self.settings.docker_host} does not enforce no-new-privileges, which Swarm "
            'cannot set per service: start dockerd with --no-new-privileges ("no-new-privileges": true in '
            "daemon.json) on every node, or accept the weaker rule with "
            f"{self._setting('ACCEPT_WITHOUT_NO_NEW_PRIVILEGES')}=1"
        )

    async def resolve_image(self, image: str) -> str | None:
        facts = await self.facts(max_age=FACTS_TTL)
        try:
            inspect = await self._api.call(
                "GET", self._api.path("/images/{}/json", image), f"looking up {image}"
            )
        except EngineNotFound:
            inspect = None
        except EngineError as exc:
            raise BackendRejected(
                self.name, "image", f"image: the engine refused {image!r}: {exc.message}"
            ) from exc
        reference = image_reference(image, inspect, single_node=facts.nodes <= 1)
        if reference is None and inspect is not None:
            raise BackendRejected(
                self.name,
                "image",
                f"image: {image!r} has no registry digest, and backend {self.name!r} is a swarm of "
                f"{facts.nodes} nodes: push the image to a registry every node can pull from",
            )
        return reference

    async def validate(self, spec: ContainerSpec) -> None:
        problem = self._spec_problem(spec)
        if problem is not None:
            raise BackendRejected(self.name, *problem)
        facts = await self.facts(max_age=FACTS_TTL)
        if not facts.no_new_privileges and not self.settings.accept_without_no_new_privileges:
            raise BackendRejected(self.name, "backend", f"backend {self.name!r}: {self._nnp_message()}")
        gpus = self.gpus() or 0
        if spec.limits.gpus > gpus:
            raise BackendRejected(
                self.name,
                "gpus",
                f"gpus: {spec.limits.gpus} asked, and no node of backend {self.name!r} (kind swarm) has more "
                f"than {gpus} {self.settings.gpu_resource} (the nodes' generic resources, or "
                f"{self._setting('GPUS')})",
            )

    def _spec_problem(self, spec: ContainerSpec) -> tuple[str, str] | None:
        where = f"(backend {self.name!r}, kind swarm)"
        if spec.user[0] == 0:
            return "user", f"user: tools never run as root (uid 0) {where}"
        if spec.docker_socket:
            return "docker_socket", f"docker_socket: the Docker socket is never offered on a cluster {where}"
        if spec.limits.memory is not None and spec.limits.memory < MIN_MEMORY:
            return "memory", f"memory: at least {MIN_MEMORY} bytes {where}"
        problem = placement_problem(spec.placement) or self.staging.problem(spec)
        if problem:
            return ("placement" if problem.startswith("placement") else "user"), f"{problem} {where}"
        return None
