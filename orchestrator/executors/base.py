"""The seam between the run engine and whatever runs containers.

The request and result are the executor's own pydantic models (``executor.wire.models``), imported here,
so both sides of the wire validate the same definition. A new backend (Kubernetes, a local runner)
implements ``ExecutorBackend``; the engine never sees HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from executor.wire.models import KillRequest, RunRequest, RunResult

ContainerRequest = RunRequest
ContainerResult = RunResult

__all__ = ["ContainerRequest", "ContainerResult", "ExecutorBackend", "KillRequest"]


class ExecutorBackend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> None:
        """Return when the backend can run containers; raise ExecutorUnavailable otherwise."""

    async def run(self, request: RunRequest, timeout: float) -> RunResult:
        """Run one container to its end. The backend enforces ``request.timeout`` and
        ``request.stall_timeout`` itself; ``timeout`` only bounds waiting for a silent backend.
        Raises ExecutorUnavailable (can pass: retried) or StepRejected (will not pass)."""

    async def image_id(self, image: str) -> str | None:
        """The id of ``image`` where containers run (None when it is not there): the cache's key."""

    async def kill(self, request: KillRequest) -> list[str]:
        """Kill and remove the containers of a run (or one step of it) now; returns their names.
        Later ``run`` calls for the same run (and step) are refused."""

    def log(self, container: str, follow: bool = False) -> AsyncIterator[bytes]:
        """The container's output (full, bounded by the request's ``log_max_bytes``), as the backend
        keeps it from the container's start; with ``follow``, until the container has ended. Raises
        NotFound when the backend keeps no log of that container, ExecutorUnavailable when away."""

    async def drop_log(self, container: str) -> None:
        """Forget the container's log (the orchestrator has kept its own copy)."""
