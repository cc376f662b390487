"""Reading the settings: the environment (and ``MAO_CONFIG_FILE``) into one checked ``Settings``,
every problem listed at once."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from executor.transport import socket_path_problem
from executor.wire.names import name_problem
from executor.wire.settings import Reader

from ..errors import ConfigError
from . import table as t
from .backends.kinds import parse_backends
from .checks import (
    advertise_url_problem,
    api_hostnames,
    data_dir_problem,
    default_advertise_url,
    etcd_tls,
    executor_transport,
    git_credentials_file,
    legacy_open_problem,
    master_roots,
    parse_endpoints,
)
from .settings import Settings, mask_url_password

DEFAULT_ETCD_ENDPOINT = "127.0.0.1:2379"
V = TypeVar("V")


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

    config_file = env.get(t.CONFIG_FILE.variable)
    if config_file:
        try:
            env = {**read_env_file(Path(config_file)), **env}
        except OSError as exc:
            problems.append(f"MAO_CONFIG_FILE: cannot read {config_file}: {exc.strerror}")
    # Rows are read in the order their problems have always been listed.
    read = Reader(env, problems)
    get = read.raw

    instance_name = get(t.INSTANCE_NAME.variable) or socket.gethostname().split(".")[0]
    if problem := name_problem(instance_name, "MAO_INSTANCE_NAME"):
        problems.append(problem)

    data_dir = Path(read(t.DATA_DIR) or Path.home() / ".mao" / "data").expanduser()
    if not data_dir.is_absolute():
        data_dir = data_dir.resolve()
    if problem := data_dir_problem(data_dir):
        problems.append(problem)
    host_data_dir = Path(read(t.HOST_DATA_DIR) or data_dir)
    if not host_data_dir.is_absolute():
        problems.append(f"MAO_HOST_DATA_DIR={host_data_dir} must be an absolute path")

    raw_endpoints = read(t.ETCD_ENDPOINTS) or DEFAULT_ETCD_ENDPOINT
    endpoints = parse_endpoints(raw_endpoints, problems)
    etcd_ca, etcd_cert, etcd_key, etcd_insecure = etcd_tls(get, raw_endpoints, read(t.ETCD_INSECURE), problems)

    database_url = read(t.DATABASE_URL) or f"sqlite+aiosqlite:///{data_dir / 'mao.db'}"
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        problems.append(
            f"MAO_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
            f"(got {mask_url_password(database_url)!r})"
        )

    api_host = read(t.API_HOST)
    api_port = read(t.API_PORT)
    api_token = read(t.API_TOKEN)

    executor_url = (read(t.EXECUTOR_URL) or f"unix://{data_dir / 'executor' / 'executor.sock'}").rstrip("/")
    executor_insecure_tcp = read(t.EXECUTOR_INSECURE_TCP)
    executor_fingerprint = executor_transport(get, executor_url, executor_insecure_tcp, problems)
    api_socket = Path(read(t.API_SOCKET) or data_dir / "api.sock")
    if problem := socket_path_problem(str(api_socket), "MAO_API_SOCKET"):
        problems.append(problem)
    executor_token = read(t.EXECUTOR_TOKEN) or ""
    # MAO_EXECUTOR_TOKEN is required when a docker backend takes it (executors/registry.py).
    backends, default_backend = parse_backends(get, env, problems)

    labels = _copy(read(t.LABELS))
    advertise_url = (read(t.ADVERTISE_URL) or default_advertise_url(api_host, api_port)).rstrip("/")
    if problem := advertise_url_problem(advertise_url):
        problems.append(problem)
    raw_dataset = read(t.RAW_DATASET)

    # The API's guards and the data's confinement (docs/security.md).
    api_legacy_open = read(t.API_LEGACY_OPEN)
    if problem := legacy_open_problem(api_legacy_open, api_host, api_token):
        problems.append(problem)
    hostnames = api_hostnames(read(t.API_HOSTNAMES), advertise_url, api_host, problems)
    git_credentials = git_credentials_file(read(t.GIT_CREDENTIALS), problems)
    roots = master_roots(read(t.MASTER_ROOTS), data_dir, problems)

    settings = Settings(
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
        labels=labels,
        advertise_url=advertise_url,
        raw_dataset=raw_dataset,
        api_legacy_open=api_legacy_open,
        api_hostnames=hostnames,
        git_credentials=git_credentials,
        master_roots=roots,
        etcd_ca=etcd_ca,
        etcd_cert=etcd_cert,
        etcd_key=etcd_key,
        etcd_insecure=etcd_insecure,
        backends=backends,
        default_backend=default_backend,
        git_name=read(t.GIT_NAME) or f"MAO {instance_name}",
        git_email=read(t.GIT_EMAIL) or f"mao@{instance_name}",
        # The rows whose value is their variable's alone, in the order their problems have always
        # been listed.
        etcd_compact_interval=read(t.ETCD_COMPACT_INTERVAL),
        etcd_compact_keep=read(t.ETCD_COMPACT_KEEP),
        gateway_bytes_per_second=read(t.GATEWAY_BYTES_PER_SECOND),
        gateway_entries_per_second=read(t.GATEWAY_ENTRIES_PER_SECOND),
        log_level=read(t.LOG_LEVEL),
        tool_uid=read(t.TOOL_UID),
        tool_gid=read(t.TOOL_GID),
        step_memory=read(t.STEP_MEMORY),
        step_cpus=read(t.STEP_CPUS),
        step_pids=read(t.STEP_PIDS),
        step_max_output=read(t.STEP_MAX_OUTPUT),
        step_max_files=read(t.STEP_MAX_FILES),
        step_tmp_size=read(t.STEP_TMP_SIZE),
        step_log_max_bytes=read(t.STEP_LOG_MAX_BYTES),
        git_gc_interval=read(t.GIT_GC_INTERVAL),
        etcd_quota_bytes=read(t.ETCD_QUOTA_BYTES),
        log_format=read(t.LOG_FORMAT),
        phase_timings=read(t.PHASE_TIMINGS),
        etcd_timeout=read(t.ETCD_TIMEOUT),
        lock_ttl=read(t.LOCK_TTL),
        lock_wait=read(t.LOCK_WAIT),
        step_timeout=read(t.STEP_TIMEOUT),
        git_timeout=read(t.GIT_TIMEOUT),
        member_ttl=read(t.MEMBER_TTL),
        raw_ttl=read(t.RAW_TTL),
        raw_batch_seconds=read(t.RAW_BATCH_SECONDS),
        raw_batch_size=read(t.RAW_BATCH_SIZE),
        gateway_rate=read(t.GATEWAY_RATE),
        gateway_burst=read(t.GATEWAY_BURST),
        metrics_token=read(t.METRICS_TOKEN),
        run_retention_days=read(t.RUN_RETENTION_DAYS),
        max_active_runs=read(t.MAX_ACTIVE_RUNS),
        pools=_copy(read(t.POOLS)),
    )
    if problems:
        raise ConfigError(problems)
    return settings


def _copy(value: dict[str, V]) -> dict[str, V]:
    # Never the row's default itself: each Settings owns its dict.
    return dict(value)
