"""The orchestrator's own errors, on the hierarchy it shares with the executor (``executor.wire.errors``).

Services raise these; library errors (etcd, git, docker, SQL) are translated into them at the adapter
edge, and one aiohttp middleware renders them as ``{"error": code, "message": ...}`` with their status.
``from orchestrator.errors import ...`` names the shared classes too.
"""

from __future__ import annotations

from executor.wire.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    MaoError,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DatabaseUnavailable",
    "EtcdUnavailable",
    "ExecutorUnavailable",
    "Forbidden",
    "GitError",
    "MalformedEntry",
    "MaoError",
    "NotFound",
    "PayloadTooLarge",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
]


class EtcdUnavailable(Unavailable, code="etcd_unavailable"):
    """etcd did not answer (no quorum, unreachable, timed out)."""


class DatabaseUnavailable(Unavailable, code="database_unavailable"):
    """The database did not answer."""


class ExecutorUnavailable(Unavailable, code="executor_unavailable"):
    """The executor did not answer."""


class GitError(MaoError, status=503, code="git_error"):
    """A git operation failed (remote unreachable, push rejected, corrupt repository)."""


class MalformedEntry(MaoError, status=502, code="malformed_registry_entry"):
    """A registry value in etcd that is not what this version writes (written by hand or by a broken
    client). The fault is upstream of this instance, hence 502; ``key`` names the etcd key."""
