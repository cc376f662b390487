"""The orchestrator's own errors.

Services raise these; library errors (etcd, git, docker, SQL) are translated into them at the adapter
edge, and one aiohttp middleware renders them as ``{"error": code, "message": ...}`` with their status.
"""

from __future__ import annotations

from typing import Any


class MaoError(Exception):
    """Base class: an error a client can act on. ``extra`` is merged into the JSON body; ``headers``
    are sent with it (``Retry-After``)."""

    status = 500
    code = "internal"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(MaoError):
    status = 400
    code = "bad_request"


class Unauthorized(MaoError):
    status = 401
    code = "unauthorized"


class Forbidden(MaoError):
    status = 403
    code = "forbidden"


class NotFound(MaoError):
    status = 404
    code = "not_found"


class Conflict(MaoError):
    status = 409
    code = "conflict"


class PayloadTooLarge(MaoError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(MaoError):
    status = 429
    code = "too_many_requests"


class Unavailable(MaoError):
    """A backing service (etcd, database, executor, a git remote) did not answer."""

    status = 503
    code = "unavailable"


class EtcdUnavailable(Unavailable):
    code = "etcd_unavailable"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"


class ExecutorUnavailable(Unavailable):
    code = "executor_unavailable"


class GitError(MaoError):
    """A git operation failed (remote unreachable, push rejected, corrupt repository)."""

    status = 503
    code = "git_error"


class ConfigError(Exception):
    """The configuration cannot work; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class MalformedEntry(MaoError):
    """A registry value in etcd that is not what this version writes (written by hand or by a broken
    client). The fault is upstream of this instance, hence 502; ``key`` names the etcd key."""

    status = 502
    code = "malformed_registry_entry"
