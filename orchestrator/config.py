"""The orchestrator's settings: one object, read from ``MAO_*`` environment variables.

An optional env-style file (``MAO_CONFIG_FILE``, ``KEY=VALUE`` lines, the same file ``maoctl instance
install`` writes) supplies values the environment does not set. Everything is validated at start and a
configuration that cannot work is refused with every problem listed at once.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.private_folder import make_private
from executor.transport import (
    certificate_fingerprint,
    parse_fingerprint,
    socket_path_problem,
    unix_socket_path,
)
from executor.wire.names import name_problem

from .domain.sizes import parse_size
from .errors import ConfigError
from .executors.backend_config import BackendConfig, parse_backends
from .urls import split_url

DEFAULT_ETCD_ENDPOINT = "127.0.0.1:2379"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
MIN_STEP_MEMORY = 6 * 1024 * 1024  # the Docker engine refuses less
# The unspecified addresses the prototype's samples send (curl http://0.0.0.0:8080): only a page this
# API served itself has them as its origin, so a rebinding page cannot use them.
UNSPECIFIED_HOSTS = ("0.0.0.0", "::")
_HOSTNAME_RE = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,252})?$|^[0-9a-f:.]+$")


@dataclass(frozen=True)
class Settings:
    instance_name: str
    data_dir: Path
    host_data_dir: Path
    etcd_endpoints: tuple[tuple[str, int], ...]
    database_url: str
    api_host: str
    api_port: int
    api_token: str | None
    executor_url: str
    executor_token: str
    git_name: str
    git_email: str
    etcd_timeout: float = 5.0
    lock_ttl: int = 15
    lock_wait: float = 600.0
    step_timeout: float = 3600.0
    git_timeout: float = 120.0
    labels: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    # Where other instances and operators reach this API; published in the member record.
    advertise_url: str = ""
    member_ttl: int = 10
    # The gateway: raw entries' lifetime, the dataset they are kept in, and the write rate per key.
    raw_ttl: int = 60
    raw_dataset: str | None = None
    raw_batch_seconds: float = 5.0
    raw_batch_size: int = 100
    gateway_rate: float = 5.0
    gateway_burst: int = 10
    # -- tools (docs/security.md#tools) --------------------------------------------------------
    # Who a tool runs as when the orchestrator itself is root (see tool_user), never uid 0.
    tool_uid: int = 65534
    tool_gid: int = 65534
    # Per-step limits a step may override with its own memory / cpus fields.
    step_memory: int = 2 * 1024**3
    step_cpus: float = 1.0
    step_pids: int = 512
    # What one step may commit (bytes of its output folder); more fails the step, nothing committed.
    step_max_output: int = 1024**3
    # Entries (files, folders, links) one step's output folder, or an input snapshot, may hold; more
    # fails the step naming the path, nothing committed (docs/security.md#tools).
    step_max_files: int = 200_000
    # Bytes of the tmpfs every tool gets as /tmp (its root file system is read-only).
    step_tmp_size: int = 256 * 1024**2
    # Bytes of an attempt's output kept as its full log (head and tail beyond; docs/operations.md).
    step_log_max_bytes: int = 50 * 1024**2
    # Seconds between two `git gc --auto` passes over the local repositories; 0 turns them off.
    git_gc_interval: float = 6 * 3600.0

    def tool_user(self) -> tuple[int, int]:
        """The uid:gid every tool runs as, decided here only: this process's own ids unless they are
        root's, else MAO_TOOL_UID/MAO_TOOL_GID. Work folders are handed to this owner before a step."""
        uid = os.getuid()
        if uid != 0:
            return uid, os.getgid()
        return self.tool_uid, self.tool_gid
    # -- trust: the API's guards and the data's confinement (docs/security.md) -------------------
    # The token file the orchestrator wrote when MAO_API_TOKEN was not given (``token_file``).
    api_token_file: Path | None = None
    # The prototype's tokenless loopback API, for its old clients only (warned about at start).
    api_legacy_open: bool = False
    # The Host names (without port) the API answers to; anything else is a 421 (DNS rebinding).
    api_hostnames: tuple[str, ...] = ()
    # A git credential-store file (``https://user:pw@host`` lines) git uses for masters' remotes.
    git_credentials: Path | None = None
    # Local-path masters must lie under one of these (resolved) folders.
    master_roots: tuple[Path, ...] = ()
    # etcd compaction: every interval seconds, keep the newest ``keep`` revisions of history.
    etcd_compact_interval: float = 300.0
    etcd_compact_keep: int = 100_000
    # etcd's --quota-backend-bytes (its default): near it, compaction and the gateway make room
    # (federation/space.py), and GET /health says so.
    etcd_quota_bytes: int = 2 * 1024**3
    # The gateway's per-instance write budget, across all keys: bytes and entries per second.
    gateway_bytes_per_second: int = 256 * 1024
    gateway_entries_per_second: float = 50.0
    # etcd over TLS: the federation CA and this instance's client certificate and key. All three, or
    # none and etcd_insecure (plain HTTP, only when asked for: tests only, warned about at start).
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    etcd_insecure: bool = False
    # Operations: a token that may only read /metrics (for a scraper), the log line format, and how
    # long runs and tick records are kept.
    metrics_token: str | None = None
    log_format: str = "text"
    # Per-phase timings of waiting POST /pipeline/run calls (orchestrator/phases.py): the bench's.
    phase_timings: bool = False
    run_retention_days: float = 90.0
    # Admission (orchestrator/runs/admission.py): runs active at once on this instance (None: no
    # limit), and named pools of slots a step takes with its ``pool`` field while it runs.
    max_active_runs: int | None = None
    pools: dict[str, int] = field(default_factory=dict)
    # -- local transports (docs/security.md#transports) -----------------------------------------
    # An https executor's pinned certificate (SHA-256 of its DER form); plain http to the executor only
    # when asked for (tests); the Unix socket maoctl reaches this API through (None: none).
    executor_fingerprint: bytes | None = None
    executor_insecure_tcp: bool = False
    api_socket: Path | None = None
    # Where steps run (orchestrator/executors, docs/backends.md): the configured backends (MAO_BACKENDS)
    # and the one a step without ``backend`` uses.
    backends: tuple[BackendConfig, ...] = ()
    default_backend: str = "local"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    def host_path(self, path: Path) -> Path:
        """``path`` (under the data dir) as the Docker engine sees it, for bind mounts."""
        return self.host_data_dir / path.relative_to(self.data_dir)

    def describe(self) -> dict[str, object]:
        """The effective settings with secrets masked, for ``--check-config`` and logs."""
        return {
            "MAO_INSTANCE_NAME": self.instance_name,
            "MAO_DATA_DIR": str(self.data_dir),
            "MAO_HOST_DATA_DIR": str(self.host_data_dir),
            "MAO_ETCD_ENDPOINTS": ",".join(f"{h}:{p}" for h, p in self.etcd_endpoints),
            "MAO_ETCD_CA": str(self.etcd_ca) if self.etcd_ca else None,
            "MAO_ETCD_CERT": str(self.etcd_cert) if self.etcd_cert else None,
            "MAO_ETCD_KEY": str(self.etcd_key) if self.etcd_key else None,
            "MAO_ETCD_INSECURE": self.etcd_insecure,
            "MAO_DATABASE_URL": _mask_url_password(self.database_url),
            "MAO_API_HOST": self.api_host,
            "MAO_API_PORT": self.api_port,
            "MAO_API_TOKEN": "***" if self.api_token else None,
            "MAO_EXECUTOR_URL": self.executor_url,
            "MAO_EXECUTOR_TOKEN": "***",
            "MAO_EXECUTOR_TLS_FINGERPRINT": self.executor_fingerprint.hex() if self.executor_fingerprint else None,
            "MAO_EXECUTOR_INSECURE_TCP": self.executor_insecure_tcp,
            "MAO_API_SOCKET": str(self.api_socket) if self.api_socket else None,
            "MAO_GIT_NAME": self.git_name,
            "MAO_GIT_EMAIL": self.git_email,
            "MAO_LABELS": ",".join(f"{k}={v}" for k, v in self.labels.items()),
            "MAO_STEP_TIMEOUT": self.step_timeout,
            "MAO_LOCK_TTL": self.lock_ttl,
            "MAO_ADVERTISE_URL": self.advertise_url,
            "MAO_MEMBER_TTL": self.member_ttl,
            "MAO_RAW_TTL": self.raw_ttl,
            "MAO_RAW_DATASET": self.raw_dataset,
            "MAO_RAW_BATCH_SECONDS": self.raw_batch_seconds,
            "MAO_RAW_BATCH_SIZE": self.raw_batch_size,
            "MAO_GATEWAY_RATE": self.gateway_rate,
            "MAO_GATEWAY_BURST": self.gateway_burst,
            "MAO_TOOL_UID": self.tool_uid,
            "MAO_TOOL_GID": self.tool_gid,
            "MAO_STEP_MEMORY": self.step_memory,
            "MAO_STEP_CPUS": self.step_cpus,
            "MAO_STEP_PIDS": self.step_pids,
            "MAO_STEP_MAX_OUTPUT": self.step_max_output,
            "MAO_STEP_MAX_FILES": self.step_max_files,
            "MAO_STEP_TMP_SIZE": self.step_tmp_size,
            "MAO_STEP_LOG_MAX_BYTES": self.step_log_max_bytes,
            "MAO_GIT_GC_INTERVAL": self.git_gc_interval,
            "MAO_API_TOKEN_FILE": str(self.api_token_file) if self.api_token_file else None,
            "MAO_API_LEGACY_OPEN": self.api_legacy_open,
            "MAO_API_HOSTNAMES": ",".join(self.api_hostnames),
            "MAO_GIT_CREDENTIALS": str(self.git_credentials) if self.git_credentials else None,
            "MAO_MASTER_ROOTS": ",".join(str(p) for p in self.master_roots),
            "MAO_ETCD_COMPACT_INTERVAL": self.etcd_compact_interval,
            "MAO_ETCD_COMPACT_KEEP": self.etcd_compact_keep,
            "MAO_ETCD_QUOTA_BYTES": self.etcd_quota_bytes,
            "MAO_GATEWAY_BYTES_PER_SECOND": self.gateway_bytes_per_second,
            "MAO_GATEWAY_ENTRIES_PER_SECOND": self.gateway_entries_per_second,
            "MAO_METRICS_TOKEN": "***" if self.metrics_token else None,
            "MAO_LOG_FORMAT": self.log_format,
            "MAO_PHASE_TIMINGS": "1" if self.phase_timings else "0",
            "MAO_RUN_RETENTION_DAYS": self.run_retention_days,
            "MAO_MAX_ACTIVE_RUNS": self.max_active_runs,
            "MAO_POOLS": ",".join(f"{k}={v}" for k, v in self.pools.items()),
            "MAO_BACKENDS": ",".join(f"{b.name}={b.kind}" for b in self.backends),
            "MAO_DEFAULT_BACKEND": self.default_backend,
            **{
                f"MAO_BACKEND_{b.name.upper().replace('-', '_')}_{key.upper()}": _masked(key, value)
                for b in self.backends
                for key, value in b.settings.model_dump().items()
                if value is not None
            },
        }


def _masked(key: str, value: object) -> object:
    return "***" if any(word in key for word in ("token", "password", "secret", "key")) else value


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines (``#`` comments, optional quotes); no shell expansion."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise ConfigError listing every problem."""
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []

    config_file = env.get("MAO_CONFIG_FILE")
    if config_file:
        try:
            env = {**read_env_file(Path(config_file)), **env}
        except OSError as exc:
            problems.append(f"MAO_CONFIG_FILE: cannot read {config_file}: {exc.strerror}")

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else default

    def get_number(name: str, default: float, low: float, high: float, integer: bool = False) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not a{'n integer' if integer else ' number'}")
            return default
        if not low <= value <= high:
            problems.append(f"{name}={raw} must be between {low:g} and {high:g}")
            return default
        return value

    instance_name = get("MAO_INSTANCE_NAME") or socket.gethostname().split(".")[0]
    if problem := name_problem(instance_name, "MAO_INSTANCE_NAME"):
        problems.append(problem)

    data_dir = Path(get("MAO_DATA_DIR") or Path.home() / ".mao" / "data").expanduser()
    if not data_dir.is_absolute():
        data_dir = data_dir.resolve()
    if problem := _data_dir_problem(data_dir):
        problems.append(problem)
    host_data_dir = Path(get("MAO_HOST_DATA_DIR") or data_dir)
    if not host_data_dir.is_absolute():
        problems.append(f"MAO_HOST_DATA_DIR={host_data_dir} must be an absolute path")

    raw_endpoints = get("MAO_ETCD_ENDPOINTS", DEFAULT_ETCD_ENDPOINT) or ""
    endpoints = _parse_endpoints(raw_endpoints, problems)
    etcd_ca, etcd_cert, etcd_key, etcd_insecure = _etcd_tls(get, raw_endpoints, problems)

    database_url = get("MAO_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'mao.db'}"
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        problems.append(
            f"MAO_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
            f"(got {_mask_url_password(database_url)!r})"
        )

    api_host = get("MAO_API_HOST", "127.0.0.1") or "127.0.0.1"
    api_port = int(get_number("MAO_API_PORT", 8080, 1, 65535, integer=True))
    api_token = get("MAO_API_TOKEN")

    executor_url = (get("MAO_EXECUTOR_URL") or f"unix://{data_dir / 'executor' / 'executor.sock'}").rstrip("/")
    executor_fingerprint, executor_insecure_tcp = _executor_transport(get, executor_url, problems)
    api_socket = Path(get("MAO_API_SOCKET") or data_dir / "api.sock")
    if problem := socket_path_problem(str(api_socket), "MAO_API_SOCKET"):
        problems.append(problem)
    executor_token = get("MAO_EXECUTOR_TOKEN") or ""
    # MAO_EXECUTOR_TOKEN is required when a docker backend takes it (executors/registry.py).
    backends, default_backend = parse_backends(get, env, problems)

    labels: dict[str, str] = {}
    for item in filter(None, (get("MAO_LABELS", "") or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"MAO_LABELS: {item!r} is not key=value")
        else:
            labels[key.strip()] = value.strip()

    advertise_url = (get("MAO_ADVERTISE_URL") or _default_advertise_url(api_host, api_port)).rstrip("/")
    if problem := _advertise_url_problem(advertise_url):
        problems.append(problem)

    raw_dataset = get("MAO_RAW_DATASET")
    if raw_dataset is not None and (problem := name_problem(raw_dataset, "MAO_RAW_DATASET")):
        problems.append(problem)

    trust = _trust_settings(get, get_number, problems, api_host, api_token, advertise_url, data_dir)

    log_level = (get("MAO_LOG_LEVEL", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"MAO_LOG_LEVEL={log_level} must be DEBUG, INFO, WARNING or ERROR")

    def get_size(name: str, default: int, low: int) -> int:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = parse_size(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            return default
        if value < low:
            problems.append(f"{name}={raw} must be at least {low} bytes")
            return default
        return value

    # -- tools: uid, limits, output bound, git gc (one block; docs/security.md#tools) -------------
    tool_uid = int(get_number("MAO_TOOL_UID", 65534, 1, 2**32 - 2, integer=True))
    tool_gid = int(get_number("MAO_TOOL_GID", 65534, 1, 2**32 - 2, integer=True))
    step_memory = get_size("MAO_STEP_MEMORY", 2 * 1024**3, MIN_STEP_MEMORY)
    step_cpus = get_number("MAO_STEP_CPUS", 1.0, 0.01, 1024)
    step_pids = int(get_number("MAO_STEP_PIDS", 512, 8, 4_194_304, integer=True))
    step_max_output = get_size("MAO_STEP_MAX_OUTPUT", 1024**3, 1)
    step_max_files = int(get_number("MAO_STEP_MAX_FILES", 200_000, 1, 100_000_000, integer=True))
    step_tmp_size = min(get_size("MAO_STEP_TMP_SIZE", 256 * 1024**2, 1024**2), 2**40)
    step_log_max_bytes = min(get_size("MAO_STEP_LOG_MAX_BYTES", 50 * 1024**2, 64 * 1024), 2**40)
    git_gc_interval = get_number("MAO_GIT_GC_INTERVAL", 6 * 3600.0, 0, 30 * 86400)
    etcd_quota_bytes = get_size("MAO_ETCD_QUOTA_BYTES", 2 * 1024**3, 16 * 1024**2)
    if etcd_quota_bytes > MAX_ETCD_QUOTA:
        problems.append(f"MAO_ETCD_QUOTA_BYTES must be at most {MAX_ETCD_QUOTA} bytes (8g, etcd's own limit)")
    log_format = (get("MAO_LOG_FORMAT", "text") or "text").lower()
    if log_format not in ("text", "json"):
        problems.append(f"MAO_LOG_FORMAT={log_format} must be text or json")
    timings = (get("MAO_PHASE_TIMINGS", "") or "").lower()
    if timings not in ("", "0", "1"):
        problems.append(f"MAO_PHASE_TIMINGS={timings!r} must be 1 or 0")

    settings = Settings(
        etcd_quota_bytes=etcd_quota_bytes,
        tool_uid=tool_uid,
        tool_gid=tool_gid,
        step_memory=step_memory,
        step_cpus=step_cpus,
        step_pids=step_pids,
        step_max_output=step_max_output,
        step_max_files=step_max_files,
        step_tmp_size=step_tmp_size,
        step_log_max_bytes=step_log_max_bytes,
        git_gc_interval=git_gc_interval,
        instance_name=instance_name,
        data_dir=data_dir,
        host_data_dir=host_data_dir,
        etcd_endpoints=tuple(endpoints),
        database_url=database_url,
        api_host=api_host,
        api_port=api_port,
        api_token=api_token,
        executor_url=executor_url,
        executor_token=executor_token,
        executor_fingerprint=executor_fingerprint,
        executor_insecure_tcp=executor_insecure_tcp,
        api_socket=api_socket,
        git_name=get("MAO_GIT_NAME", f"MAO {instance_name}") or "",
        git_email=get("MAO_GIT_EMAIL", f"mao@{instance_name}") or "",
        etcd_timeout=get_number("MAO_ETCD_TIMEOUT", 5.0, 0.1, 120),
        lock_ttl=int(get_number("MAO_LOCK_TTL", 15, 2, 3600, integer=True)),
        lock_wait=get_number("MAO_LOCK_WAIT", 600.0, 1, 86400),
        step_timeout=get_number("MAO_STEP_TIMEOUT", 3600.0, 1, 7 * 86400),
        git_timeout=get_number("MAO_GIT_TIMEOUT", 120.0, 1, 3600),
        labels=labels,
        log_level=log_level,
        advertise_url=advertise_url,
        # etcd refuses leases shorter than about 1.5 election timeouts; 2 s is its floor with defaults.
        member_ttl=int(get_number("MAO_MEMBER_TTL", 10, 2, 300, integer=True)),
        # Same floor as the member TTL: etcd refuses shorter leases.
        raw_ttl=int(get_number("MAO_RAW_TTL", 60, 2, 86400, integer=True)),
        raw_dataset=raw_dataset,
        raw_batch_seconds=get_number("MAO_RAW_BATCH_SECONDS", 5.0, 0.1, 3600),
        raw_batch_size=int(get_number("MAO_RAW_BATCH_SIZE", 100, 1, 10000, integer=True)),
        gateway_rate=get_number("MAO_GATEWAY_RATE", 5.0, 0.01, 10000),
        gateway_burst=int(get_number("MAO_GATEWAY_BURST", 10, 1, 100000, integer=True)),
        **trust,
        etcd_ca=etcd_ca,
        etcd_cert=etcd_cert,
        etcd_key=etcd_key,
        etcd_insecure=etcd_insecure,
        metrics_token=get("MAO_METRICS_TOKEN"),
        log_format=log_format,
        phase_timings=timings == "1",
        run_retention_days=get_number("MAO_RUN_RETENTION_DAYS", 90.0, 0.0001, 36500),
        # 0 or unset: no limit.
        max_active_runs=int(get_number("MAO_MAX_ACTIVE_RUNS", 0, 0, 100_000, integer=True)) or None,
        pools=parse_pools(get("MAO_POOLS") or "", problems),
        backends=backends,
        default_backend=default_backend,
    )
    if problems:
        raise ConfigError(problems)
    return settings


def _trust_settings(
    get: Callable[..., str | None],
    get_number: Callable[..., float],
    problems: list[str],
    api_host: str,
    api_token: str | None,
    advertise_url: str,
    data_dir: Path,
) -> dict[str, Any]:
    """The API guards' and the data's settings (docs/security.md), validated into ``problems``."""
    legacy = (get("MAO_API_LEGACY_OPEN", "") or "").lower()
    if legacy not in ("", "0", "1", "true", "false", "yes", "no"):
        problems.append(f"MAO_API_LEGACY_OPEN={legacy!r} must be 1 or 0")
    legacy_open = legacy in ("1", "true", "yes")
    if legacy_open and not is_loopback(api_host):
        problems.append(
            f"MAO_API_LEGACY_OPEN=1 opens the API without a token, which is only allowed on loopback, "
            f"but MAO_API_HOST={api_host}: listen on 127.0.0.1 or drop MAO_API_LEGACY_OPEN"
        )
    if legacy_open and api_token:
        problems.append("MAO_API_LEGACY_OPEN=1 and MAO_API_TOKEN are both set: choose one")

    raw_names = get("MAO_API_HOSTNAMES")
    if raw_names:
        hostnames = [n.strip().lower() for n in raw_names.split(",") if n.strip()]
    else:
        advertised = split_url(advertise_url)
        hostnames = [*sorted(LOOPBACK_NAMES), "127.0.0.1", "::1", *UNSPECIFIED_HOSTS, api_host.lower()]
        if advertised is not None and advertised.hostname:
            hostnames.append(advertised.hostname.lower())
    for name in hostnames:
        if not _HOSTNAME_RE.fullmatch(name):
            problems.append(f"MAO_API_HOSTNAMES: {name!r} is not a host name or IP address")

    credentials = get("MAO_GIT_CREDENTIALS")
    git_credentials = Path(credentials).expanduser() if credentials else None
    if git_credentials is not None:
        if not git_credentials.is_absolute():
            problems.append(f"MAO_GIT_CREDENTIALS={credentials} must be an absolute path")
        elif not git_credentials.is_file():
            problems.append(f"MAO_GIT_CREDENTIALS={credentials} is not a file")
        elif git_credentials.stat().st_mode & 0o077:
            problems.append(f"MAO_GIT_CREDENTIALS={credentials} is readable by other users: chmod 600 it")

    roots: list[Path] = []
    for item in filter(None, (part.strip() for part in (get("MAO_MASTER_ROOTS") or "").split(","))):
        root = Path(item).expanduser()
        if not root.is_absolute():
            problems.append(f"MAO_MASTER_ROOTS: {item!r} must be an absolute path")
        else:
            roots.append(root.resolve())
    # The default: the local bare repositories POST /bare-repo/init creates.
    roots = roots or [(data_dir / "repos").resolve()]

    return {
        "api_legacy_open": legacy_open,
        "api_hostnames": tuple(dict.fromkeys(hostnames)),
        "git_credentials": git_credentials,
        "master_roots": tuple(roots),
        "etcd_compact_interval": get_number("MAO_ETCD_COMPACT_INTERVAL", 300.0, 0, 86400),
        "etcd_compact_keep": int(get_number("MAO_ETCD_COMPACT_KEEP", 100_000, 10, 10**9, integer=True)),
        "gateway_bytes_per_second": int(
            get_number("MAO_GATEWAY_BYTES_PER_SECOND", 256 * 1024, 1024, 10**9, integer=True)
        ),
        "gateway_entries_per_second": get_number("MAO_GATEWAY_ENTRIES_PER_SECOND", 50.0, 0.1, 100000),
    }


def _executor_transport(
    get: Callable[[str], str | None], url: str, problems: list[str]
) -> tuple[bytes | None, bool]:
    """The executor's URL checked for a transport that proves the server (docs/security.md#transports):
    ``unix:///path`` (the default, in the data dir), ``https://`` with a pinned certificate
    (MAO_EXECUTOR_TLS_FINGERPRINT, or MAO_EXECUTOR_TLS_CERT the fingerprint is taken from), or plain
    ``http://`` on loopback only with MAO_EXECUTOR_INSECURE_TCP=1. Returns (pin, plain TCP allowed)."""
    insecure_raw = (get("MAO_EXECUTOR_INSECURE_TCP") or "0").lower()
    if insecure_raw not in TRUE + FALSE:
        problems.append(f"MAO_EXECUTOR_INSECURE_TCP={insecure_raw!r} must be 1 or 0")
    insecure = insecure_raw in TRUE
    pin_text, pin_file = get("MAO_EXECUTOR_TLS_FINGERPRINT"), get("MAO_EXECUTOR_TLS_CERT")
    pin: bytes | None = None
    if pin_text and pin_file:
        problems.append("MAO_EXECUTOR_TLS_FINGERPRINT and MAO_EXECUTOR_TLS_CERT both pin the executor: give one")
    elif pin_text:
        pin = parse_fingerprint(pin_text)
        if pin is None:
            problems.append(
                f"MAO_EXECUTOR_TLS_FINGERPRINT={pin_text!r} is not a SHA-256 fingerprint (64 hex digits, "
                "colons allowed, as `mao-executor --fingerprint` prints it)"
            )
    elif pin_file:
        try:
            pin = certificate_fingerprint(Path(pin_file).expanduser().read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"MAO_EXECUTOR_TLS_CERT={pin_file} is not a readable PEM certificate ({exc})")
    if (path := unix_socket_path(url)) is not None:
        if problem := socket_path_problem(path, "MAO_EXECUTOR_URL"):
            problems.append(problem)
        return None, insecure
    parts = split_url(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(
            f"MAO_EXECUTOR_URL={url!r} is not unix:///path/to/executor.sock or an http(s) URL"
        )
    elif parts.scheme == "http" and (pin_text or pin_file):
        problems.append(f"MAO_EXECUTOR_URL={url} is plain HTTP, so a pinned certificate cannot apply: write https://")
    elif parts.scheme == "https" and pin is None and not (pin_text or pin_file):
        problems.append(
            f"MAO_EXECUTOR_URL={url} needs the executor's certificate pinned: set MAO_EXECUTOR_TLS_FINGERPRINT "
            "to what `mao-executor --fingerprint` prints on its host (or MAO_EXECUTOR_TLS_CERT to its certificate)"
        )
    elif parts.scheme == "http" and not (insecure and is_loopback(parts.hostname)):
        problems.append(
            f"MAO_EXECUTOR_URL={url} is plain HTTP: whoever listens on that port while the executor is down "
            "receives its token and every step's secrets. Use the executor's Unix socket (the default, "
            "unix://$MAO_DATA_DIR/executor/executor.sock), https:// with MAO_EXECUTOR_TLS_FINGERPRINT, or, "
            "for tests only, a loopback address with MAO_EXECUTOR_INSECURE_TCP=1"
        )
    return pin, insecure


MAX_POOL_SLOTS = 100_000
MAX_ETCD_QUOTA = 8 * 1024**3


def parse_pools(raw: str, problems: list[str]) -> dict[str, int]:
    """``MAO_POOLS``: ``name=slots`` items separated by commas (``gpu=1,heavy=2``); each problem
    goes into ``problems`` naming the item."""
    pools: dict[str, int] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, slots = (x.strip() for x in item.partition("="))
        if not sep or not name:
            problems.append(f"MAO_POOLS: {item!r} is not name=slots (e.g. gpu=1,heavy=2)")
        elif problem := name_problem(name, "MAO_POOLS pool name"):
            problems.append(problem)
        elif not slots.isdigit() or not 1 <= int(slots) <= MAX_POOL_SLOTS:
            problems.append(f"MAO_POOLS: {item!r}: slots must be a whole number from 1 to {MAX_POOL_SLOTS}")
        elif name in pools:
            problems.append(f"MAO_POOLS: pool {name!r} is given twice")
        else:
            pools[name] = int(slots)
    return pools


def _parse_endpoints(raw: str, problems: list[str]) -> list[tuple[str, int]]:
    endpoints = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        # Accept http://host:port too: operators paste etcd's client URLs.
        hostport = item.split("://", 1)[-1].rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"MAO_ETCD_ENDPOINTS: {item!r} is not host:port")
            continue
        endpoints.append((host.strip("[]"), int(port)))
    if not endpoints and not any(p.startswith("MAO_ETCD_ENDPOINTS") for p in problems):
        problems.append("MAO_ETCD_ENDPOINTS is empty: give at least one host:port")
    return endpoints


TLS_VARIABLES = ("MAO_ETCD_CA", "MAO_ETCD_CERT", "MAO_ETCD_KEY")
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _etcd_tls(
    get: Callable[[str], str | None], raw_endpoints: str, problems: list[str]
) -> tuple[Path | None, Path | None, Path | None, bool]:
    """The etcd TLS files (checked: readable, the key not readable by others) and the plain-HTTP switch.

    Secure by default: without the three files the orchestrator starts only when MAO_ETCD_INSECURE=1
    says plain HTTP is meant, and an endpoint's scheme, when given, must agree with the choice."""
    insecure_raw = (get("MAO_ETCD_INSECURE") or "0").lower()
    if insecure_raw not in TRUE + FALSE:
        problems.append(f"MAO_ETCD_INSECURE={insecure_raw!r} must be 1 or 0")
    insecure = insecure_raw in TRUE
    given = {name: get(name) for name in TLS_VARIABLES}
    schemes = {item.strip().split("://", 1)[0].lower() for item in raw_endpoints.split(",") if "://" in item}
    if not any(given.values()):
        if not insecure:
            problems.append(
                "etcd needs TLS: set MAO_ETCD_CA, MAO_ETCD_CERT and MAO_ETCD_KEY (the federation CA and "
                "this instance's client certificate and key; `maoctl instance install` writes them), or "
                "MAO_ETCD_INSECURE=1 for a plain-HTTP etcd, for tests only (anything that reaches its "
                "port, a web page in a browser included, reads and writes it)"
            )
        elif "https" in schemes:
            problems.append(
                "MAO_ETCD_ENDPOINTS has https:// endpoints but MAO_ETCD_INSECURE=1 asks for plain HTTP"
            )
        return None, None, None, insecure
    missing = [name for name, value in given.items() if not value]
    if missing:
        problems.append(
            f"etcd over TLS needs all of {', '.join(TLS_VARIABLES)}; missing: {', '.join(missing)}"
        )
    if insecure:
        problems.append("MAO_ETCD_INSECURE=1 contradicts MAO_ETCD_CA/CERT/KEY: choose TLS or plain HTTP")
    if "http" in schemes:
        problems.append(
            "MAO_ETCD_ENDPOINTS has http:// endpoints but etcd is reached over TLS: write https:// or host:port"
        )
    paths: list[Path | None] = []
    for name, value in given.items():
        path = Path(value).expanduser() if value else None
        if path is not None:
            if problem := _tls_file_problem(name, path, private=name == "MAO_ETCD_KEY"):
                problems.append(problem)
        paths.append(path)
    return paths[0], paths[1], paths[2], False


def _tls_file_problem(name: str, path: Path, private: bool) -> str | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
        mode = path.stat().st_mode
    except OSError as exc:
        return f"{name}={path} cannot be read: {exc.strerror or exc}"
    if b"-----BEGIN" not in head:
        return f"{name}={path} is not a PEM file"
    if private and mode & 0o077:
        return (
            f"{name}={path} is readable by others (mode {mode & 0o777:o}): the key proves this instance to "
            f"the federation; chmod 600 {path}"
        )
    return None


def _default_advertise_url(api_host: str, api_port: int) -> str:
    # A wildcard address means nothing to other machines: publish the host name instead.
    host = socket.gethostname() if api_host in ("0.0.0.0", "::", "") else api_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{api_port}"


def _advertise_url_problem(url: str) -> str | None:
    parts = split_url(url)
    if parts is None:
        return f"MAO_ADVERTISE_URL={url!r} is not a valid URL (check the host and port)"
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return f"MAO_ADVERTISE_URL={url!r} is not an http(s) URL such as http://node1.example.org:8080"
    return None


def _data_dir_problem(data_dir: Path) -> str | None:
    try:
        # 0700: the database, secrets and every dataset below it are this user's alone.
        make_private(data_dir)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"MAO_DATA_DIR={data_dir} is not writable: {exc.strerror or exc}"
    return None


def _mask_url_password(url: str) -> str:
    parts = split_url(url)
    if parts is not None and parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
