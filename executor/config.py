"""Executor settings, read from the environment and validated all at once.

Every problem is collected before failing so an operator fixes the whole environment in one round trip
instead of discovering mistakes one restart at a time.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from executor.transport import socket_path_problem
from executor.wire.errors import ConfigError
from executor.wire.images import image_problem, normalize_image
from executor.wire.names import name_problem

PullPolicy = Literal["missing", "never"]
# How the orchestrator reaches the executor (docs/security.md#transports): a private Unix socket (the
# default), TLS with the executor's own certificate (for an orchestrator on another host), or plain
# TCP on loopback (tests only: whoever takes the port while the executor is down gets the token).
Listen = Literal["unix", "tls", "tcp"]
LISTEN_MODES = ("unix", "tls", "tcp")
# The executor's own folder under its data root: its socket, its TLS certificate. No tool mounts it.
PRIVATE_FOLDER = "executor"
SOCKET_FILE = "executor.sock"
# A data root may not be, hold or lie inside these: a tool given a folder there would read or change
# the host's system, or the Docker engine's own state (root on the host).
SYSTEM_FOLDERS = (
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
    "/sys", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd",
)  # fmt: skip

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_MAX_PARALLEL = 8
DEFAULT_PULL_TIMEOUT = 300.0
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Far above any sane setting; it only stops a typo from creating thousands of threads.
_MAX_PARALLEL_CAP = 1024


@dataclass(frozen=True)
class Settings:
    token: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    instance: str = "executor"
    # Stored normalised (see executor.wire.images.normalize_image) so lookups are plain set membership.
    docker_socket_images: frozenset[str] = frozenset()
    docker_socket: str = DEFAULT_DOCKER_SOCKET
    max_parallel: int = DEFAULT_MAX_PARALLEL
    pull: PullPolicy = "missing"
    pull_timeout: float = DEFAULT_PULL_TIMEOUT
    log_level: str = "INFO"
    # Who a tool runs as when a client sends no user (executor.hardening); never root.
    tool_uid: int = 65534
    tool_gid: int = 65534
    # Where containers' full output is kept until fetched (executor.output_log); None: a fresh
    # private temporary folder per process.
    log_dir: str | None = None
    # The only folder tree tools may get mounted (resolved; executor.hardening.mount_source).
    data_root: Path = Path("/nonexistent/mao-data-root")
    listen: Listen = "unix"
    # The Unix socket (listen "unix"), and the TLS certificate and key (listen "tls"; None: the
    # executor's own, generated into its private folder).
    socket_path: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def private_folder(self) -> Path:
        return self.data_root / PRIVATE_FOLDER

    @property
    def address(self) -> str:
        """Where this executor listens, as the orchestrator's MAO_EXECUTOR_URL names it."""
        if self.listen == "unix":
            return f"unix://{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.listen == 'tls' else 'http'}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return host_is_loopback(self.host)

    def describe(self) -> dict[str, Any]:
        """The effective settings for ``--check-config``, with the token masked."""
        return {
            "MAO_EXECUTOR_TOKEN": mask(self.token),
            "MAO_EXECUTOR_HOST": self.host,
            "MAO_EXECUTOR_PORT": self.port,
            "MAO_INSTANCE_NAME": self.instance,
            "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES": ",".join(sorted(self.docker_socket_images)),
            "MAO_EXECUTOR_DOCKER_SOCKET": self.docker_socket,
            "MAO_EXECUTOR_MAX_PARALLEL": self.max_parallel,
            "MAO_EXECUTOR_PULL": self.pull,
            "MAO_EXECUTOR_PULL_TIMEOUT": self.pull_timeout,
            "MAO_LOG_LEVEL": self.log_level,
            "MAO_TOOL_UID": self.tool_uid,
            "MAO_TOOL_GID": self.tool_gid,
            "MAO_EXECUTOR_LOG_DIR": self.log_dir or "(a private temporary folder)",
            "MAO_EXECUTOR_DATA_ROOT": str(self.data_root),
            "MAO_EXECUTOR_LISTEN": self.listen,
            "MAO_EXECUTOR_SOCKET": str(self.socket_path) if self.socket_path else None,
            "MAO_EXECUTOR_TLS_CERT": str(self.tls_cert) if self.tls_cert else None,
            "MAO_EXECUTOR_TLS_KEY": str(self.tls_key) if self.tls_key else None,
            "url": self.address,
        }


def mask(secret: str) -> str:
    # Never any part of it: even a prefix of a short token helps guessing the rest.
    return "***" if secret else "(empty)"


def host_is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``environ`` (default ``os.environ``); raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    token = env.get("MAO_EXECUTOR_TOKEN", "")
    if not token.strip():
        problems.append(
            "MAO_EXECUTOR_TOKEN is required: set it to a long random secret shared with the orchestrator "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )

    host = env.get("MAO_EXECUTOR_HOST", DEFAULT_HOST).strip()
    if not host:
        problems.append("MAO_EXECUTOR_HOST must not be empty (default 127.0.0.1)")

    port = _int_setting(env, "MAO_EXECUTOR_PORT", DEFAULT_PORT, 1, 65535, problems)

    instance = env.get("MAO_INSTANCE_NAME", "").strip() or socket.gethostname()
    problem = name_problem(instance, "MAO_INSTANCE_NAME")
    if problem:
        problems.append(problem)

    allowed: set[str] = set()
    for item in env.get("MAO_EXECUTOR_DOCKER_SOCKET_IMAGES", "").split(","):
        item = item.strip()
        if not item:
            continue
        problem = image_problem(item)
        if problem:
            problems.append(f"MAO_EXECUTOR_DOCKER_SOCKET_IMAGES entry {item!r} {problem}")
        else:
            allowed.add(normalize_image(item))

    docker_socket = env.get("MAO_EXECUTOR_DOCKER_SOCKET", DEFAULT_DOCKER_SOCKET).strip()
    if not docker_socket.startswith("/"):
        problems.append(
            f"MAO_EXECUTOR_DOCKER_SOCKET must be an absolute path (as the Docker engine's host sees it), "
            f"got {docker_socket!r}"
        )

    max_parallel = _int_setting(
        env, "MAO_EXECUTOR_MAX_PARALLEL", DEFAULT_MAX_PARALLEL, 1, _MAX_PARALLEL_CAP, problems
    )

    pull = env.get("MAO_EXECUTOR_PULL", "missing").strip().lower() or "missing"
    if pull not in ("missing", "never"):
        problems.append(f"MAO_EXECUTOR_PULL must be 'missing' or 'never', got {pull!r}")
        pull = "missing"

    pull_timeout = DEFAULT_PULL_TIMEOUT
    raw = env.get("MAO_EXECUTOR_PULL_TIMEOUT", "").strip()
    if raw:
        try:
            pull_timeout = float(raw)
            if not (0 < pull_timeout <= 86400):
                raise ValueError
        except ValueError:
            problems.append(
                f"MAO_EXECUTOR_PULL_TIMEOUT must be a number of seconds in (0, 86400], got {raw!r}"
            )

    log_level = env.get("MAO_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in _LOG_LEVELS:
        problems.append(f"MAO_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}")

    # Tools never run as root: uid/gid 0 is refused here as it is at /run.
    tool_uid = _int_setting(env, "MAO_TOOL_UID", 65534, 1, 2**32 - 2, problems)
    tool_gid = _int_setting(env, "MAO_TOOL_GID", 65534, 1, 2**32 - 2, problems)
    if (socket_gid := _gid_of(docker_socket)) is not None and tool_gid == socket_gid:
        problems.append(
            f"MAO_TOOL_GID={tool_gid} is the group of the Docker socket {docker_socket}: every tool "
            "would be root on this host; choose an unprivileged group (default 65534)"
        )

    log_dir = env.get("MAO_EXECUTOR_LOG_DIR", "").strip() or None
    if log_dir is not None and not log_dir.startswith("/"):
        problems.append(f"MAO_EXECUTOR_LOG_DIR must be an absolute path, got {log_dir!r}")

    data_root = _data_root(env, docker_socket, problems)
    listen = env.get("MAO_EXECUTOR_LISTEN", "unix").strip().lower() or "unix"
    if listen not in LISTEN_MODES:
        problems.append(f"MAO_EXECUTOR_LISTEN must be unix, tls or tcp, got {listen!r}")
        listen = "unix"
    if listen == "tcp" and not host_is_loopback(host):
        problems.append(
            f"MAO_EXECUTOR_LISTEN=tcp (plain HTTP) is only allowed on loopback, but MAO_EXECUTOR_HOST={host}: "
            "use MAO_EXECUTOR_LISTEN=tls for an orchestrator on another host"
        )
    raw_socket = env.get("MAO_EXECUTOR_SOCKET", "").strip()
    socket_path = Path(raw_socket) if raw_socket else data_root / PRIVATE_FOLDER / SOCKET_FILE
    if listen == "unix" and (problem := socket_path_problem(str(socket_path), "MAO_EXECUTOR_SOCKET")):
        problems.append(problem)
    tls_files = [env.get(name, "").strip() or None for name in ("MAO_EXECUTOR_TLS_CERT", "MAO_EXECUTOR_TLS_KEY")]
    if any(tls_files) and not all(tls_files):
        problems.append("MAO_EXECUTOR_TLS_CERT and MAO_EXECUTOR_TLS_KEY go together: give both, or neither")
    for name, value in zip(("MAO_EXECUTOR_TLS_CERT", "MAO_EXECUTOR_TLS_KEY"), tls_files, strict=True):
        if value is not None and not os.path.isfile(value):
            problems.append(f"{name}={value} is not a readable file")

    if problems:
        raise ConfigError(problems)
    return Settings(
        token=token,
        host=host,
        port=port,
        instance=instance,
        docker_socket_images=frozenset(allowed),
        docker_socket=docker_socket,
        max_parallel=max_parallel,
        pull=pull,  # type: ignore[arg-type]  # checked against the Literal's values above
        pull_timeout=pull_timeout,
        log_level=log_level,
        tool_uid=tool_uid,
        tool_gid=tool_gid,
        log_dir=log_dir,
        data_root=data_root,
        listen=listen,  # type: ignore[arg-type]  # checked against LISTEN_MODES above
        socket_path=socket_path if listen == "unix" else None,
        tls_cert=Path(tls_files[0]) if tls_files[0] else None,
        tls_key=Path(tls_files[1]) if tls_files[1] else None,
    )


def _gid_of(path: str) -> int | None:
    try:
        return os.stat(path).st_gid
    except OSError:
        return None


def _data_root(env: Mapping[str, str], docker_socket: str, problems: list[str]) -> Path:
    """MAO_EXECUTOR_DATA_ROOT (default: MAO_DATA_DIR, else the orchestrator's default ~/.mao/data),
    resolved; a problem when it is not absolute, not a folder, or a system folder or an ancestor of one."""
    raw = env.get("MAO_EXECUTOR_DATA_ROOT", "").strip() or env.get("MAO_DATA_DIR", "").strip()
    path = Path(raw).expanduser() if raw else Path.home() / ".mao" / "data"
    if not path.is_absolute():
        problems.append(f"MAO_EXECUTOR_DATA_ROOT must be an absolute path, got {raw!r}")
        return path
    root = path.resolve()
    if root.exists() and not root.is_dir():
        problems.append(f"MAO_EXECUTOR_DATA_ROOT={path} is not a folder")
    for system in SYSTEM_FOLDERS:
        folder = Path(system).resolve()
        if root == folder or root.is_relative_to(folder) or folder.is_relative_to(root):
            problems.append(
                f"MAO_EXECUTOR_DATA_ROOT={path} is or holds the system folder {system}: tools would be "
                "given folders of the host's system; use the orchestrator's data folder (MAO_HOST_DATA_DIR)"
            )
            return root
    socket_file = Path(docker_socket).resolve()
    if socket_file.is_relative_to(root):
        problems.append(
            f"MAO_EXECUTOR_DATA_ROOT={path} holds the Docker socket {docker_socket}: a tool given its "
            "folder would be root on this host"
        )
    return root


def _int_setting(
    env: Mapping[str, str], key: str, default: int, low: int, high: int, problems: list[str]
) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{key} must be an integer between {low} and {high}, got {raw!r}")
        return default
    if not low <= value <= high:
        problems.append(f"{key} must be between {low} and {high}, got {value}")
        return default
    return value


def log_level_number(settings: Settings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level]
