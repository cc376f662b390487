"""The error hierarchy both services share: one JSON shape, ``{"error": code, "message": ...}``.

Services raise these; library errors (etcd, git, docker, SQL) are translated into them at the adapter
edge, and one aiohttp middleware on each side renders them with their status. The orchestrator adds its
own codes, the executor its own (``executor.errors``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

S = TypeVar("S")


class MaoError(Exception):
    """Base class: an error a client can act on. ``extra`` is merged into the JSON body; ``headers``
    are sent with it (``Retry-After``)."""

    status = 500
    code = "internal"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: Any) -> None:
        """A subclass names its status and code in its header: ``class Gone(MaoError, status=410,
        code="gone")``; one it leaves out is inherited."""
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

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


class BadRequest(MaoError, status=400, code="bad_request"):
    """The request's input is wrong (a field, a name, a value)."""


class Unauthorized(MaoError, status=401, code="unauthorized"):
    """No token, or a wrong one."""


class Forbidden(MaoError, status=403, code="forbidden"):
    """The caller may not do this (a policy, another instance's registration, a foreign page)."""


class NotFound(MaoError, status=404, code="not_found"):
    """Nothing by that name."""


class Conflict(MaoError, status=409, code="conflict"):
    """The request clashes with the current state (in use, already running, changed meanwhile)."""


class PayloadTooLarge(MaoError, status=413, code="payload_too_large"):
    """The body is over the size limit."""


class TooManyRequests(MaoError, status=429, code="too_many_requests"):
    """Over a rate limit; ``Retry-After`` says when to come back."""


class Unavailable(MaoError, status=503, code="unavailable"):
    """A backing service (etcd, database, executor, a git remote) did not answer."""


class ConfigError(Exception):
    """The configuration cannot work; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def settings_or_exit(load: Callable[[], S], heading: str) -> S:
    """``load()``'s settings; on a ConfigError, ``heading`` and every problem on stderr (no traceback)
    and exit 2: how both daemons start."""
    try:
        return load()
    except ConfigError as exc:
        print(heading, file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None
