"""What every tool container is denied: root, capabilities, privilege escalation, unbounded resources,
any user but the configured one, and any folder outside the data root.

Kept apart from the run flow (``executor.runs``) so the policy can be read, and tested, in one place.
The executor token alone must not be a path to root on this host (docs/security.md#tools), so a client
holding it still cannot choose:
- who the tool runs as: only ``MAO_TOOL_UID``:``MAO_TOOL_GID`` (never 0, never the Docker socket's
  group; a request naming any other user is refused), given as ``uid:gid`` so that the engine adds no
  supplementary group from the image's /etc/group;
- what it mounts: only folders below ``MAO_EXECUTOR_DATA_ROOT``, resolved (a symlink leading out is
  refused, and the resolved path is what the engine mounts), never the executor's own folder;
- the Docker socket, unless the image is on ``MAO_EXECUTOR_DOCKER_SOCKET_IMAGES``.
The resource limits come with each request; ``pids`` has a default here because a fork bomb must be
bounded even for a client that sends none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest, LogConfig

from executor.config import Settings
from executor.errors import DockerSocketNotAllowed, MountNotAllowed, UserNotAllowed
from executor.wire.images import normalize_image
from executor.wire.models import DEFAULT_TMP_SIZE, ContainerFields

log = logging.getLogger(__name__)

DEFAULT_PIDS = 512
# Docker's own log of a container (json-file): two files of 16 MiB at most, rotated.
CONTAINER_LOG_SIZE = "16m"
CONTAINER_LOG_FILES = 2
NANO = 1_000_000_000
GPU_DRIVER = "nvidia"
GPU_CAPABILITIES = ("gpu",)


def tool_user(request: ContainerFields, tool_uid: int, tool_gid: int) -> str:
    """The ``uid:gid`` the container runs as: always ``tool_uid:tool_gid`` (MAO_TOOL_UID/MAO_TOOL_GID).
    A request may name that user (a bare uid means its group too) or none; any other is refused."""
    configured = f"{tool_uid}:{tool_gid}"
    if request.user is None:
        return configured
    uid, _, gid = request.user.partition(":")
    if int(uid) == tool_uid and (not gid or int(gid) == tool_gid):
        return configured
    if int(uid) == 0 or (gid and int(gid) == 0):
        reason = "tools never run as root (uid or gid 0)"
    else:
        reason = f"this executor runs tools only as {configured} (MAO_TOOL_UID:MAO_TOOL_GID)"
    raise UserNotAllowed(
        f"user {request.user!r} is refused: {reason}; leave user out, or set the executor's "
        "MAO_TOOL_UID/MAO_TOOL_GID to the user the orchestrator runs tools as (its own uid:gid when it "
        "is not root, else its MAO_TOOL_UID/MAO_TOOL_GID)"
    )


def private_folders(settings: Settings) -> list[Path]:
    """The executor's own folders (socket, TLS files, kept logs): never mounted into a tool."""
    folders = [settings.private_folder]
    for path in (settings.socket_path, settings.tls_cert, settings.tls_key):
        if path is not None:
            folders.append(path.parent.resolve())
    if settings.log_dir:
        folders.append(Path(settings.log_dir).resolve())
    return folders


def mount_source(path: str, field_name: str, settings: Settings, also_private: Sequence[Path] = ()) -> str:
    """The folder the engine mounts for ``path``: resolved (symlinks followed), and only when it lies
    below the data root and outside the executor's own folders (and ``also_private``: the log folder
    the process made); MountNotAllowed otherwise."""
    resolved = Path(path).resolve()
    root = settings.data_root
    if resolved == root or not resolved.is_relative_to(root):
        raise MountNotAllowed(
            f"{field_name}: {path!r} is not a folder below this executor's data root {root} "
            "(MAO_EXECUTOR_DATA_ROOT): the executor mounts nothing else"
        )
    for folder in [*private_folders(settings), *(p.resolve() for p in also_private)]:
        if resolved == folder or resolved.is_relative_to(folder) or folder.is_relative_to(resolved):
            raise MountNotAllowed(f"{field_name}: {path!r} holds the executor's own files ({folder})")
    return str(resolved)


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
    """Keyword arguments for ``containers.create``: no capability, no setuid gain, bounded resources,
    and bounded disk while it runs: a read-only root file system (unless the step opts out with
    ``writable_root``) with /tmp a tmpfs of ``tmp_size`` bytes (tmpfs pages count against the
    container's memory too), and Docker's own copy of its output capped at ``CONTAINER_LOG_FILES``
    files of ``CONTAINER_LOG_SIZE`` (the full log is the executor's, bounded by ``log_max_bytes``)."""
    tmp_size = request.tmp_size or DEFAULT_TMP_SIZE
    limits: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": request.pids or DEFAULT_PIDS,
        "read_only": not request.writable_root,
        # mode 1777 like any /tmp; nosuid/nodev: nothing planted there gains privileges.
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_size},mode=1777"},
        "log_config": LogConfig(
            type=LogConfig.types.JSON,
            config={"max-size": CONTAINER_LOG_SIZE, "max-file": str(CONTAINER_LOG_FILES)},
        ),
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
    if request.gpus:
        limits["device_requests"] = gpu_requests(request.gpus)
    return limits


def gpu_requests(count: int) -> list[DeviceRequest]:
    """``count`` GPUs of the NVIDIA runtime (``docker run --gpus N``): any ``count`` of the host's,
    chosen by the runtime. An engine without it refuses the container at create (a 400)."""
    return [DeviceRequest(driver=GPU_DRIVER, count=count, capabilities=[list(GPU_CAPABILITIES)])]
