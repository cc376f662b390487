"""The orchestrator's settings object: every value it runs with, and its masked description.

Built by ``load.load_settings`` from the ``MAO_*`` variables (the rows of ``table.py``); frozen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..urls import split_url
from .backends.kinds import BackendConfig


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
            "MAO_DATABASE_URL": mask_url_password(self.database_url),
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
                f"MAO_BACKEND_{b.name.upper().replace('-', '_')}_{key.upper()}": masked(key, value)
                for b in self.backends
                for key, value in b.settings.model_dump().items()
                if value is not None
            },
        }


def masked(key: str, value: object) -> object:
    return "***" if any(word in key for word in ("token", "password", "secret", "key")) else value



def mask_url_password(url: str) -> str:
    parts = split_url(url)
    if parts is not None and parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
