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
from executor.wire.settings import Check, Invalid, Reader, Setting, choice, integer, text

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


# -- the table (docs/configuration.md#executor) -----------------------------------------------------------


def _not_empty(variable: str, value: str) -> str | None:
    return None if value else f"{variable} must not be empty (default 127.0.0.1)"


def _images(variable: str, raw: str) -> frozenset[str]:
    allowed: set[str] = set()
    problems = []
    for item in (part.strip() for part in raw.split(",")):
        if item and (problem := image_problem(item)):
            problems.append(f"{variable} entry {item!r} {problem}")
        elif item:
            allowed.add(normalize_image(item))
    if problems:
        raise Invalid(*problems)
    return frozenset(allowed)


def _absolute(kind: str) -> Check[str | None]:
    def check(variable: str, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            return f"{variable} must be an absolute path{kind}, got {value!r}"
        return None

    return check


def _pull_timeout(variable: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise Invalid(f"{variable} must be a number of seconds in (0, 86400], got {raw!r}")
    return value


def _optional(variable: str, raw: str) -> str | None:
    return raw


def _ids(name: str, variable: str, doc: str) -> Setting[int]:
    # Tools never run as root: uid/gid 0 is refused here as it is at /run.
    return Setting(name, variable, integer(1, 2**32 - 2, "executor"), 65534, doc)


TOKEN: Setting[str] = Setting(
    "token", "MAO_EXECUTOR_TOKEN", text, "", "the secret the orchestrator sends (required)", secret=True
)
HOST = Setting(
    "host", "MAO_EXECUTOR_HOST", text, DEFAULT_HOST, "the address to listen on", check=_not_empty, keep_empty=True
)
PORT = Setting("port", "MAO_EXECUTOR_PORT", integer(1, 65535, "executor"), DEFAULT_PORT, "the port (tls, tcp)")
INSTANCE = Setting("instance", "MAO_INSTANCE_NAME", text, "", "this host's name (default: its host name)")
SOCKET_IMAGES = Setting(
    "docker_socket_images", "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES", _images, frozenset[str](),
    "images that may have the Docker socket mounted",
)  # fmt: skip
DOCKER_SOCKET = Setting(
    "docker_socket", "MAO_EXECUTOR_DOCKER_SOCKET", text, DEFAULT_DOCKER_SOCKET, "the Docker engine's socket",
    check=_absolute(" (as the Docker engine's host sees it)"), keep_empty=True,
)  # fmt: skip
MAX_PARALLEL = Setting(
    "max_parallel", "MAO_EXECUTOR_MAX_PARALLEL", integer(1, _MAX_PARALLEL_CAP, "executor"), DEFAULT_MAX_PARALLEL,
    "containers run at once",
)  # fmt: skip
PULL = Setting(
    "pull", "MAO_EXECUTOR_PULL", choice(("missing", "never"), "{variable} must be 'missing' or 'never', got {value!r}"),
    "missing", "pull a missing image, or never",
)  # fmt: skip
PULL_TIMEOUT = Setting(
    "pull_timeout", "MAO_EXECUTOR_PULL_TIMEOUT", _pull_timeout, DEFAULT_PULL_TIMEOUT, "seconds a pull may take"
)
LOG_LEVEL = Setting(
    "log_level", "MAO_LOG_LEVEL",
    choice(_LOG_LEVELS, f"{{variable}} must be one of {', '.join(_LOG_LEVELS)}, got {{value!r}}", fold=str.upper),
    "INFO", "the log level",
)  # fmt: skip
TOOL_UID = _ids("tool_uid", "MAO_TOOL_UID", "the uid a tool runs as when the client sends none")
TOOL_GID = _ids("tool_gid", "MAO_TOOL_GID", "the gid a tool runs as when the client sends none")
LOG_DIR = Setting[str | None](
    "log_dir", "MAO_EXECUTOR_LOG_DIR", _optional, None, "where containers' full output is kept until fetched",
    check=_absolute(""),
)  # fmt: skip
DATA_ROOT = Setting[str | None](
    "data_root", "MAO_EXECUTOR_DATA_ROOT", _optional, None, "the only folder tree tools may get mounted"
)
DATA_DIR = Setting[str | None]("data_root", "MAO_DATA_DIR", _optional, None, "MAO_EXECUTOR_DATA_ROOT's default")
LISTEN = Setting(
    "listen", "MAO_EXECUTOR_LISTEN", choice(LISTEN_MODES, "{variable} must be unix, tls or tcp, got {value!r}"),
    "unix", "unix, tls or tcp",
)  # fmt: skip
SOCKET = Setting[str | None]("socket_path", "MAO_EXECUTOR_SOCKET", _optional, None, "the Unix socket (listen unix)")
TLS_CERT = Setting[str | None]("tls_cert", "MAO_EXECUTOR_TLS_CERT", _optional, None, "the TLS certificate (listen tls)")
TLS_KEY = Setting[str | None]("tls_key", "MAO_EXECUTOR_TLS_KEY", _optional, None, "the TLS key (listen tls)")

TABLE: tuple[Setting[Any], ...] = (
    TOKEN, HOST, PORT, INSTANCE, SOCKET_IMAGES, DOCKER_SOCKET, MAX_PARALLEL, PULL, PULL_TIMEOUT, LOG_LEVEL,
    TOOL_UID, TOOL_GID, LOG_DIR, DATA_ROOT, DATA_DIR, LISTEN, SOCKET, TLS_CERT, TLS_KEY,
)  # fmt: skip


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``environ`` (default ``os.environ``); raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    read = Reader(env, problems, strip=True)

    # Taken byte for byte (never stripped): it must equal the orchestrator's MAO_EXECUTOR_TOKEN.
    token = env.get(TOKEN.variable, "")
    if not token.strip():
        problems.append(
            "MAO_EXECUTOR_TOKEN is required: set it to a long random secret shared with the orchestrator "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    host = read(HOST)
    port = read(PORT)
    instance = read(INSTANCE) or socket.gethostname()
    if problem := name_problem(instance, "MAO_INSTANCE_NAME"):
        problems.append(problem)
    allowed = read(SOCKET_IMAGES)
    docker_socket = read(DOCKER_SOCKET)
    max_parallel = read(MAX_PARALLEL)
    pull = read(PULL)
    pull_timeout = read(PULL_TIMEOUT)
    log_level = read(LOG_LEVEL)
    tool_uid, tool_gid = read(TOOL_UID), read(TOOL_GID)
    if (socket_gid := _gid_of(docker_socket)) is not None and tool_gid == socket_gid:
        problems.append(
            f"MAO_TOOL_GID={tool_gid} is the group of the Docker socket {docker_socket}: every tool "
            "would be root on this host; choose an unprivileged group (default 65534)"
        )
    log_dir = read(LOG_DIR)
    data_root = _data_root(read(DATA_ROOT) or read(DATA_DIR), docker_socket, problems)
    listen = read(LISTEN)
    if listen == "tcp" and not host_is_loopback(host):
        problems.append(
            f"MAO_EXECUTOR_LISTEN=tcp (plain HTTP) is only allowed on loopback, but MAO_EXECUTOR_HOST={host}: "
            "use MAO_EXECUTOR_LISTEN=tls for an orchestrator on another host"
        )
    raw_socket = read(SOCKET)
    socket_path = Path(raw_socket) if raw_socket else data_root / PRIVATE_FOLDER / SOCKET_FILE
    if listen == "unix" and (problem := socket_path_problem(str(socket_path), "MAO_EXECUTOR_SOCKET")):
        problems.append(problem)
    tls_files = [read(TLS_CERT), read(TLS_KEY)]
    if any(tls_files) and not all(tls_files):
        problems.append("MAO_EXECUTOR_TLS_CERT and MAO_EXECUTOR_TLS_KEY go together: give both, or neither")
    for setting, value in zip((TLS_CERT, TLS_KEY), tls_files, strict=True):
        if value is not None and not os.path.isfile(value):
            problems.append(f"{setting.variable}={value} is not a readable file")

    if problems:
        raise ConfigError(problems)
    return Settings(
        token=token,
        host=host,
        port=port,
        instance=instance,
        docker_socket_images=allowed,
        docker_socket=docker_socket,
        max_parallel=max_parallel,
        pull=pull,  # type: ignore[arg-type]  # one of the Literal's values: the parser's choice
        pull_timeout=pull_timeout,
        log_level=log_level,
        tool_uid=tool_uid,
        tool_gid=tool_gid,
        log_dir=log_dir,
        data_root=data_root,
        listen=listen,  # type: ignore[arg-type]  # one of LISTEN_MODES: the parser's choice
        socket_path=socket_path if listen == "unix" else None,
        tls_cert=Path(tls_files[0]) if tls_files[0] else None,
        tls_key=Path(tls_files[1]) if tls_files[1] else None,
    )


def _gid_of(path: str) -> int | None:
    try:
        return os.stat(path).st_gid
    except OSError:
        return None


def _data_root(raw: str | None, docker_socket: str, problems: list[str]) -> Path:
    """MAO_EXECUTOR_DATA_ROOT (default: MAO_DATA_DIR, else the orchestrator's default ~/.mao/data),
    resolved; a problem when it is not absolute, not a folder, or a system folder or an ancestor of one."""
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


def log_level_number(settings: Settings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level]
