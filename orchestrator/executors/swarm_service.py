"""What the Swarm service of one attempt looks like, and which image reference every node can run.

Pure functions (no I/O), so each rule is tested without an engine: the service body the backend
sends to ``POST /services/create``, the placement constraints, and the image reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .seam import INPUT_MOUNT, OUTPUT_MOUNT, ContainerSpec
from .staging import StagedPaths

NANO = 1_000_000_000
DEFAULT_PIDS = 512  # as the local executor: a fork bomb is bounded even when a step sends no limit
# Node label keys and values as a constraint can hold them: no spaces, no '=' or '!' (the operators).
_LABEL_KEY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._/:@+-]{1,253}$")
_DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ServiceOptions:
    """The backend's settings that shape every service."""

    networks: tuple[str, ...] = ()
    # Reserve the limits (memory, CPUs) so that Swarm places a task only where they are free.
    reserve_resources: bool = True
    max_node_cpus: float | None = None  # the largest node's CPUs: a limit past it cannot start
    # The generic resource a step's GPUs are (a node's ``--node-generic-resource KIND=...``).
    gpu_resource: str = "NVIDIA-GPU"


def node_gpus(node: Mapping[str, Any], kind: str) -> int:
    """The generic resources of ``kind`` a node of ``GET /nodes`` announces: discrete ones
    (``NVIDIA-GPU=2``) by value, named ones (``NVIDIA-GPU=GPU-8f2a...``) one each."""
    resources = ((node.get("Description") or {}).get("Resources") or {}).get("GenericResources") or []
    count = 0
    for resource in resources:
        discrete = resource.get("DiscreteResourceSpec") or {}
        if discrete.get("Kind") == kind:
            value = discrete.get("Value")
            count += value if isinstance(value, int) and value > 0 else 0
        if (resource.get("NamedResourceSpec") or {}).get("Kind") == kind:
            count += 1
    return count


def placement_problem(placement: Mapping[str, str]) -> str | None:
    """Why ``placement`` cannot become constraints, or None."""
    for key, value in placement.items():
        if not _LABEL_KEY.fullmatch(key):
            return f"placement: {key!r} is not a node label name (letters, digits, '.', '_', '/', '-')"
        if not _LABEL_VALUE.fullmatch(value):
            return (
                f"placement: the value of {key!r} may hold letters, digits and '._/:@+-' only, not {value!r}"
            )
    return None


def placement_constraints(placement: Mapping[str, str]) -> list[str]:
    return [f"node.labels.{key}=={value}" for key, value in sorted(placement.items())]


def service_body(
    spec: ContainerSpec, image: str, staged: StagedPaths, options: ServiceOptions
) -> dict[str, Any]:
    """The ``POST /services/create`` body: one replicated job, no restart, the spec's identity as its
    name and labels (on the service and its task containers), the tool's uid, no capability, limits."""
    labels = spec.all_labels()
    uid, gid = spec.user
    container: dict[str, Any] = {
        "Image": image,
        "Labels": labels,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "User": f"{uid}:{gid}",
        "CapabilityDrop": ["ALL"],
        "Mounts": [
            {"Type": "bind", "Source": str(staged.input), "Target": INPUT_MOUNT, "ReadOnly": True},
            {"Type": "bind", "Source": str(staged.output), "Target": OUTPUT_MOUNT, "ReadOnly": False},
        ],
    }
    if spec.cmd is not None:
        container["Args"] = list(spec.cmd)  # the image's entrypoint stays, as on the local executor
    limits: dict[str, Any] = {"Pids": spec.limits.pids or DEFAULT_PIDS}
    reservations: dict[str, Any] = {}
    if spec.limits.memory is not None:
        limits["MemoryBytes"] = spec.limits.memory
        reservations["MemoryBytes"] = spec.limits.memory
    if spec.limits.cpus is not None:
        cpus = spec.limits.cpus
        if options.max_node_cpus is not None:
            cpus = min(cpus, options.max_node_cpus)  # as locally: a step written for a bigger host runs
        limits["NanoCPUs"] = int(cpus * NANO)
        reservations["NanoCPUs"] = int(cpus * NANO)
    if not options.reserve_resources:
        reservations = {}
    if spec.limits.gpus:
        # Always reserved, whatever reserve_resources says: a generic resource is given to a task only
        # by reserving it (Swarm then names the ones it chose in DOCKER_RESOURCE_<KIND>, which the
        # node's NVIDIA runtime turns into devices).
        reservations["GenericResources"] = [
            {"DiscreteResourceSpec": {"Kind": options.gpu_resource, "Value": spec.limits.gpus}}
        ]
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": limits, "Reservations": reservations},
        # MAO retries, in one place: Swarm never restarts an attempt.
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": placement_constraints(spec.placement)},
    }
    if options.networks:
        template["Networks"] = [{"Target": network} for network in options.networks]
    if spec.limits.log_bytes is not None:
        # Two files of half the bound each: the node keeps between half and all of it.
        half = max(spec.limits.log_bytes // 2, 1024 * 1024)
        template["LogDriver"] = {"Name": "json-file", "Options": {"max-size": str(half), "max-file": "2"}}
    return {
        "Name": spec.name,
        "Labels": labels,
        "TaskTemplate": template,
        "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
    }


def _repository(reference: str) -> str:
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def image_reference(reference: str, inspect: Mapping[str, Any] | None, single_node: bool) -> str | None:
    """The reference that makes every node run the same bits, or None when there is none.

    One node: the local image id (nothing to pull, nothing to ask a registry). Several nodes: a
    registry digest (``repo@sha256:...``) every node can pull; an image that exists only in one
    engine's store has none (push it to the group's registry)."""
    if _DIGEST.fullmatch(reference):
        return reference
    if inspect is None:
        return None
    if single_node:
        image_id = inspect.get("Id")
        return str(image_id) if image_id else None
    digests = [str(d) for d in inspect.get("RepoDigests") or []]
    wanted = _repository(reference)
    for digest in digests:
        if _repository(digest) == wanted:
            return digest
    return digests[0] if digests else None
