"""The orchestrator's settings as a table: one row per ``MAO_*`` variable (executor/wire/settings.py),
by area, each with its parser, check, default and one line of doc (docs/configuration.md has the rest).

A row whose value depends on others (the data folder's defaults, etcd's TLS trio, the executor's
transport, the API's host names, the backends) is read here as text and judged in ``checks.py``;
``load.py`` reads every row, in the order its problems have always been listed.
"""

from __future__ import annotations

from typing import Any, TypeVar

from executor.wire.names import name_problem
from executor.wire.settings import Check, Invalid, Parser, Setting, choice, flag, integer, number, text

from ..domain.sizes import parse_size
from .checks import parse_pools

T = TypeVar("T")
MIN_STEP_MEMORY = 6 * 1024 * 1024  # the Docker engine refuses less
MAX_ETCD_QUOTA = 8 * 1024**3
MAX_TMPFS = 2**40


def size(low: int, high: int | None = None) -> Parser[int]:
    """Bytes, or a number with k, m, g or t (``512m``), at least ``low``; above ``high``, ``high``."""

    def parse(variable: str, raw: str) -> int:
        try:
            value = parse_size(raw)
        except ValueError as exc:
            raise Invalid(f"{variable}: {exc}") from None
        if value < low:
            raise Invalid(f"{variable}={raw} must be at least {low} bytes")
        return value if high is None else min(value, high)

    return parse


def optional(variable: str, raw: str) -> str | None:
    """The raw text; None (the default) when unset."""
    return raw


def _name(variable: str, value: str | None) -> str | None:
    return name_problem(value, variable) if value is not None else None


def _labels(variable: str, raw: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    problems = []
    for item in filter(None, raw.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{variable}: {item!r} is not key=value")
        else:
            labels[key.strip()] = value.strip()
    if problems:
        raise Invalid(*problems)
    return labels


def _pools(variable: str, raw: str) -> dict[str, int]:
    problems: list[str] = []
    pools = parse_pools(raw, problems)
    if problems:
        raise Invalid(*problems)
    return pools


def _no_limit_at_zero(variable: str, raw: str) -> int | None:
    return integer(0, 100_000)(variable, raw) or None


def _timings(variable: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("0", "1"):
        raise Invalid(f"{variable}={value!r} must be 1 or 0")
    return value == "1"


def _quota(variable: str, value: int) -> str | None:
    if value > MAX_ETCD_QUOTA:
        return f"{variable} must be at most {MAX_ETCD_QUOTA} bytes (8g, etcd's own limit)"
    return None


def _row(
    name: str, parse: Parser[T], default: T, doc: str, *, check: Check[T] | None = None, secret: bool = False
) -> Setting[T]:
    """A row whose variable is its field's name in capitals after ``MAO_``."""
    return Setting(name, "MAO_" + name.upper(), parse, default, doc, check=check, secret=secret)


# -- this instance and its folders ------------------------------------------------------------------------
CONFIG_FILE = Setting("config_file", "MAO_CONFIG_FILE", optional, None, "KEY=VALUE lines for what is unset")
INSTANCE_NAME = _row("instance_name", optional, None, "this instance's name (default: the host's)")
DATA_DIR = _row("data_dir", optional, None, "the data folder (default ~/.mao/data)")
HOST_DATA_DIR = _row("host_data_dir", optional, None, "the data folder as the Docker engine sees it")
DATABASE_URL = _row("database_url", optional, None, "SQLite (default, in the data folder) or PostgreSQL")
LABELS: Setting[dict[str, str]] = _row("labels", _labels, {}, "key=value labels of this instance")
LOG_LEVEL = _row(
    "log_level",
    choice(("DEBUG", "INFO", "WARNING", "ERROR"), "{variable}={value} must be DEBUG, INFO, WARNING or ERROR", fold=str.upper),
    "INFO", "the log level",
)  # fmt: skip
LOG_FORMAT = _row("log_format", choice(("text", "json"), "{variable}={value} must be text or json"), "text", "log lines")
PHASE_TIMINGS = _row("phase_timings", _timings, False, "per-phase timings of waiting runs (the bench's)")
RUN_RETENTION_DAYS = _row("run_retention_days", number(0.0001, 36500), 90.0, "days runs and ticks are kept")

# -- etcd and the federation ----------------------------------------------------------------------------
ETCD_ENDPOINTS = _row("etcd_endpoints", optional, None, "host:port,... of etcd (default 127.0.0.1:2379)")
ETCD_CA = _row("etcd_ca", optional, None, "the federation CA (PEM)")
ETCD_CERT = _row("etcd_cert", optional, None, "this instance's etcd client certificate (PEM)")
ETCD_KEY = _row("etcd_key", optional, None, "its key (PEM, mode 600; the path is shown, never the key)")
ETCD_INSECURE = _row("etcd_insecure", flag, False, "plain-HTTP etcd, for tests only")
ETCD_TIMEOUT = _row("etcd_timeout", number(0.1, 120), 5.0, "seconds an etcd call may take")
ETCD_COMPACT_INTERVAL = _row("etcd_compact_interval", number(0, 86400), 300.0, "seconds between compactions")
ETCD_COMPACT_KEEP = _row("etcd_compact_keep", integer(10, 10**9), 100_000, "revisions of history kept")
# etcd's --quota-backend-bytes (its default): near it, compaction and the gateway make room.
ETCD_QUOTA_BYTES = _row("etcd_quota_bytes", size(16 * 1024**2), 2 * 1024**3, "etcd's quota", check=_quota)
LOCK_TTL = _row("lock_ttl", integer(2, 3600), 15, "seconds a dataset lock lives without renewal")
LOCK_WAIT = _row("lock_wait", number(1, 86400), 600.0, "seconds a merge waits for a lock")
ADVERTISE_URL = _row("advertise_url", optional, None, "where other instances reach this API")
# etcd refuses leases shorter than about 1.5 election timeouts; 2 s is its floor with defaults.
MEMBER_TTL = _row("member_ttl", integer(2, 300), 10, "seconds this instance's member record lives")

# -- the API and its guards (docs/security.md) ----------------------------------------------------------
API_HOST = _row("api_host", text, "127.0.0.1", "the address the API listens on")
API_PORT = _row("api_port", integer(1, 65535), 8080, "its port")
API_TOKEN = _row("api_token", optional, None, "the API's token (default: generated into a file)", secret=True)
API_LEGACY_OPEN = _row("api_legacy_open", flag, False, "the prototype's tokenless loopback API")
API_HOSTNAMES = _row("api_hostnames", optional, None, "Host names the API answers to")
API_SOCKET = _row("api_socket", optional, None, "the Unix socket maoctl reaches the API through")
METRICS_TOKEN = _row("metrics_token", optional, None, "a token that may only read /metrics", secret=True)
GIT_CREDENTIALS = _row("git_credentials", optional, None, "a git credential-store file for masters")
MASTER_ROOTS = _row("master_roots", optional, None, "folders local-path masters must lie under")

# -- the executor on this host (docs/security.md#transports) ----------------------------------------------
EXECUTOR_URL = _row("executor_url", optional, None, "unix:///path (default, in the data folder) or https://")
EXECUTOR_TOKEN = _row("executor_token", optional, None, "the executor's token", secret=True)
EXECUTOR_TLS_FINGERPRINT = _row("executor_tls_fingerprint", optional, None, "the executor's pinned certificate")
EXECUTOR_TLS_CERT = _row("executor_tls_cert", optional, None, "the certificate to take the pin from")
EXECUTOR_INSECURE_TCP = _row("executor_insecure_tcp", flag, False, "plain HTTP on loopback, for tests only")

# -- git ------------------------------------------------------------------------------------------------
GIT_NAME = _row("git_name", optional, None, "the commits' author name (default: MAO <instance>)")
GIT_EMAIL = _row("git_email", optional, None, "the commits' author e-mail (default: mao@<instance>)")
GIT_TIMEOUT = _row("git_timeout", number(1, 3600), 120.0, "seconds a git command may take")
GIT_GC_INTERVAL = _row("git_gc_interval", number(0, 30 * 86400), 6 * 3600.0, "seconds between git gc passes")

# -- the gateway -----------------------------------------------------------------------------------------
# Same floor as the member TTL: etcd refuses shorter leases.
RAW_TTL = _row("raw_ttl", integer(2, 86400), 60, "seconds a raw entry lives")
RAW_DATASET = _row("raw_dataset", optional, None, "the dataset raw entries are kept in", check=_name)
RAW_BATCH_SECONDS = _row("raw_batch_seconds", number(0.1, 3600), 5.0, "seconds between two batches")
RAW_BATCH_SIZE = _row("raw_batch_size", integer(1, 10000), 100, "entries in one batch")
GATEWAY_RATE = _row("gateway_rate", number(0.01, 10000), 5.0, "writes per second per key")
GATEWAY_BURST = _row("gateway_burst", integer(1, 100000), 10, "writes at once per key")
GATEWAY_BYTES_PER_SECOND = _row("gateway_bytes_per_second", integer(1024, 10**9), 256 * 1024, "bytes/s, all keys")
GATEWAY_ENTRIES_PER_SECOND = _row("gateway_entries_per_second", number(0.1, 100000), 50.0, "entries/s, all keys")

# -- tools (docs/security.md#tools) ----------------------------------------------------------------------
TOOL_UID = _row("tool_uid", integer(1, 2**32 - 2), 65534, "the uid tools run as when this process is root")
TOOL_GID = _row("tool_gid", integer(1, 2**32 - 2), 65534, "the gid tools run as when this process is root")
STEP_TIMEOUT = _row("step_timeout", number(1, 7 * 86400), 3600.0, "seconds a step may run")
STEP_MEMORY = _row("step_memory", size(MIN_STEP_MEMORY), 2 * 1024**3, "a step's memory")
STEP_CPUS = _row("step_cpus", number(0.01, 1024), 1.0, "a step's CPUs")
STEP_PIDS = _row("step_pids", integer(8, 4_194_304), 512, "a step's processes")
STEP_MAX_OUTPUT = _row("step_max_output", size(1), 1024**3, "bytes one step may commit")
STEP_MAX_FILES = _row("step_max_files", integer(1, 100_000_000), 200_000, "entries of an output or input")
STEP_TMP_SIZE = _row("step_tmp_size", size(1024**2, MAX_TMPFS), 256 * 1024**2, "a tool's /tmp")
STEP_LOG_MAX_BYTES = _row("step_log_max_bytes", size(64 * 1024, MAX_TMPFS), 50 * 1024**2, "an attempt's full log")

# -- admission and backends (docs/backends.md) -----------------------------------------------------------
MAX_ACTIVE_RUNS = _row("max_active_runs", _no_limit_at_zero, None, "runs active at once (0 or unset: no limit)")
POOLS: Setting[dict[str, int]] = _row("pools", _pools, {}, "name=slots pools steps take slots of")
BACKENDS = _row("backends", optional, None, "name=kind backends (default local=docker)")
DEFAULT_BACKEND = _row("default_backend", optional, None, "the backend of a step without one (default: the first)")

# Every row above, in their order here.
TABLE: tuple[Setting[Any], ...] = tuple(row for row in globals().values() if isinstance(row, Setting))
