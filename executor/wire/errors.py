"""The error hierarchy both services share: one JSON shape, ``{"error": code, "message": ...}``.

Services raise these; library errors (etcd, git, docker, SQL) are translated into them at the adapter
edge, and one aiohttp middleware on each side renders them with their status. The orchestrator adds its
own codes, the executor its own (``executor.errors``).
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


class ConfigError(Exception):
    """The configuration cannot work; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
