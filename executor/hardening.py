"""What every tool container is denied: root, capabilities, privilege escalation and unbounded resources.

Kept apart from the run flow (``executor.runs``) so the policy can be read, and tested, in one place.
The orchestrator chooses the uid (``Settings.tool_user`` on its side); the executor refuses uid 0 and
falls back to ``MAO_TOOL_UID``/``MAO_TOOL_GID`` when a client sends none, so no caller can get a root
tool. The resource limits come with each request; ``pids`` has a default here because a fork bomb
must be bounded even for a client that sends none.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from executor.config import Settings
from executor.errors import DockerSocketNotAllowed
from executor.wire.errors import BadRequest
from executor.wire.images import normalize_image
from executor.wire.models import ContainerFields

log = logging.getLogger(__name__)

DEFAULT_PIDS = 512
NANO = 1_000_000_000


def tool_user(request: ContainerFields, default_uid: int, default_gid: int) -> str:
    """The ``uid:gid`` the container runs as: the request's, else the executor's default; never root."""
    if request.user is None:
        return f"{default_uid}:{default_gid}"
    uid, _, gid = request.user.partition(":")
    if int(uid) == 0:
        raise BadRequest(
            "user: tools never run as root (uid 0): send the uid the output folder belongs to, "
            "or leave user out to run as MAO_TOOL_UID"
        )
    # A bare uid would otherwise run with gid 0 (root's group) in most images.
    return request.user if gid else f"{uid}:{default_gid}"


def check_docker_socket(request: ContainerFields, settings: Settings) -> None:
    """Raise unless the request may get the Docker socket (only images on the allow-list may)."""
    if request.docker_socket and normalize_image(request.image) not in settings.docker_socket_images:
        raise DockerSocketNotAllowed(
            f"image {request.image!r} may not get the Docker socket: only images listed in "
            "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES may (the socket is root on this host)"
        )


def host_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def container_limits(request: ContainerFields) -> dict[str, Any]:
    """Keyword arguments for ``containers.create``: no capability, no setuid gain, bounded resources."""
    limits: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": request.pids or DEFAULT_PIDS,
    }
    if request.memory is not None:
        limits["mem_limit"] = request.memory
        # Equal to the memory limit: no swap on top, so the limit is what the host gives.
        limits["memswap_limit"] = request.memory
    if request.cpus is not None:
        cpus = request.cpus
        available = host_cpus()
        if cpus > available:
            # The engine refuses more CPUs than the host has; a step written for a bigger host still runs.
            log.info("cpus=%g capped to the %d CPUs of this host", cpus, available)
            cpus = float(available)
        limits["nano_cpus"] = int(cpus * NANO)
    return limits
