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
from typing import Any, Literal

from executor.wire.errors import ConfigError
from executor.wire.images import image_problem, normalize_image
from executor.wire.names import name_problem

PullPolicy = Literal["missing", "never"]

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

    log_dir = env.get("MAO_EXECUTOR_LOG_DIR", "").strip() or None
    if log_dir is not None and not log_dir.startswith("/"):
        problems.append(f"MAO_EXECUTOR_LOG_DIR must be an absolute path, got {log_dir!r}")

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
    )


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
