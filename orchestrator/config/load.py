"""Reading the settings: the environment (and ``MAO_CONFIG_FILE``) into one checked ``Settings``,
every problem listed at once."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from executor.transport import socket_path_problem
from executor.wire.names import name_problem

from ..domain.sizes import parse_size
from ..errors import ConfigError
from .backends.kinds import parse_backends
from .checks import (
    MAX_ETCD_QUOTA,
    advertise_url_problem,
    data_dir_problem,
    default_advertise_url,
    etcd_tls,
    executor_transport,
    parse_endpoints,
    parse_pools,
    trust_settings,
)
from .settings import Settings, mask_url_password

DEFAULT_ETCD_ENDPOINT = "127.0.0.1:2379"
MIN_STEP_MEMORY = 6 * 1024 * 1024  # the Docker engine refuses less


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
    if problem := data_dir_problem(data_dir):
        problems.append(problem)
    host_data_dir = Path(get("MAO_HOST_DATA_DIR") or data_dir)
    if not host_data_dir.is_absolute():
        problems.append(f"MAO_HOST_DATA_DIR={host_data_dir} must be an absolute path")

    raw_endpoints = get("MAO_ETCD_ENDPOINTS", DEFAULT_ETCD_ENDPOINT) or ""
    endpoints = parse_endpoints(raw_endpoints, problems)
    etcd_ca, etcd_cert, etcd_key, etcd_insecure = etcd_tls(get, raw_endpoints, problems)

    database_url = get("MAO_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'mao.db'}"
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        problems.append(
            f"MAO_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
            f"(got {mask_url_password(database_url)!r})"
        )

    api_host = get("MAO_API_HOST", "127.0.0.1") or "127.0.0.1"
    api_port = int(get_number("MAO_API_PORT", 8080, 1, 65535, integer=True))
    api_token = get("MAO_API_TOKEN")

    executor_url = (get("MAO_EXECUTOR_URL") or f"unix://{data_dir / 'executor' / 'executor.sock'}").rstrip("/")
    executor_fingerprint, executor_insecure_tcp = executor_transport(get, executor_url, problems)
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

    advertise_url = (get("MAO_ADVERTISE_URL") or default_advertise_url(api_host, api_port)).rstrip("/")
    if problem := advertise_url_problem(advertise_url):
        problems.append(problem)

    raw_dataset = get("MAO_RAW_DATASET")
    if raw_dataset is not None and (problem := name_problem(raw_dataset, "MAO_RAW_DATASET")):
        problems.append(problem)

    trust = trust_settings(get, get_number, problems, api_host, api_token, advertise_url, data_dir)

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


