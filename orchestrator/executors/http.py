"""The orchestrator's side of the executor's HTTP API (``executor/app.py`` is the other side): the
``ExecutorBackend`` of today's deployment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from pydantic import ValidationError

from executor.transport import UntrustedServer

from ..errors import ExecutorUnavailable, MaoError, NotFound
from .base import ContainerRequest, ContainerResult, KillRequest
from .transport import session_target


class StepRejected(MaoError):
    """The executor refused to run the container (unknown image, socket not allowed, bad request)."""

    status = 400
    code = "step_rejected"


def untrusted(url: str, exc: Exception) -> ExecutorUnavailable:
    return ExecutorUnavailable(
        f"the executor at {url} did not prove it is the executor ({exc}); nothing was sent to it: check "
        "MAO_EXECUTOR_URL and, for https, MAO_EXECUTOR_TLS_FINGERPRINT",
        code="executor_untrusted",
    )


class ExecutorClient:
    def __init__(self, url: str, token: str, fingerprint: bytes | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._fingerprint = fingerprint
        self._base = self.url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # The session sends the token only to a server that proved itself (executors/transport.py).
        connector, self._base = session_target(self.url, self._fingerprint)
        # No total timeout on the session: a step may legitimately run for hours; each call sets its own.
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=None), connector=connector
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def health(self) -> None:
        await self._request("GET", "/health", None, timeout=5)

    async def run(self, request: ContainerRequest, timeout: float) -> ContainerResult:
        """Run one container and wait for it. The executor enforces ``request.timeout`` itself;
        ``timeout`` here only guards against an executor that stops answering."""
        payload = request.model_dump(mode="json", exclude_none=True)
        body = await self._request("POST", "/run", payload, timeout=timeout)
        try:
            return ContainerResult.model_validate(body)
        except ValidationError as exc:
            raise ExecutorUnavailable(f"the executor answered /run with an unexpected body: {exc}") from exc

    async def image_id(self, image: str) -> str | None:
        body = await self._request("POST", "/image", {"image": image}, timeout=30)
        value = body.get("id")
        return value if isinstance(value, str) else None

    async def validate(self, request: ContainerRequest) -> None:
        """Ask the executor whether it would accept ``request`` at /run (StepRejected if not)."""
        payload = request.model_dump(mode="json", exclude_none=True)
        await self._request("POST", "/validate", payload, timeout=30)

    async def kill(self, request: KillRequest) -> list[str]:
        body = await self._request("POST", "/kill", request.model_dump(exclude_none=True), timeout=30)
        removed = body.get("removed")
        return [str(name) for name in removed] if isinstance(removed, list) else []

    async def log(self, container: str, follow: bool = False) -> AsyncIterator[bytes]:
        """The container's output as the executor keeps it (``GET /logs/{container}``); with
        ``follow``, until the container has ended. NotFound when the executor has no such log."""
        assert self._session is not None, "ExecutorClient.start() was not called"
        # No read timeout when following: a container may be silent for as long as its timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None if follow else 60)
        try:
            async with self._session.get(
                f"{self._base}/logs/{container}", params={"follow": "1" if follow else "0"}, timeout=timeout
            ) as response:
                if response.status == 404:
                    raise NotFound(f"the executor has no log of container {container}", code="log_not_found")
                if response.status >= 400:
                    raise ExecutorUnavailable(
                        f"the executor answered {response.status} for the log of {container}",
                        code="executor_unavailable",
                    )
                async for chunk in response.content.iter_chunked(64 * 1024):
                    yield chunk
        except (UntrustedServer, aiohttp.ServerFingerprintMismatch) as exc:
            raise untrusted(self.url, exc) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ExecutorUnavailable(
                f"the executor at {self.url} did not send the log of {container} ({type(exc).__name__}: {exc})"
            ) from exc

    async def drop_log(self, container: str) -> None:
        """Let the executor forget a container's log (it has been kept here)."""
        await self._request("DELETE", f"/logs/{container}", None, timeout=30)

    async def _request(self, method: str, path: str, payload: Any, timeout: float) -> dict[str, Any]:
        assert self._session is not None, "ExecutorClient.start() was not called"
        try:
            async with self._session.request(
                method, self._base + path, json=payload, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = {}
                if not isinstance(body, dict):
                    body = {}
                if response.status == 401:
                    raise ExecutorUnavailable(
                        "the executor refused our token: MAO_EXECUTOR_TOKEN must be the same for both",
                        code="executor_unauthorized",
                    )
                if response.status >= 500:
                    raise ExecutorUnavailable(
                        f"the executor failed: {body.get('message') or response.reason}",
                        code=body.get("error") or "executor_unavailable",
                    )
                if response.status >= 400:
                    raise StepRejected(
                        body.get("message") or response.reason or "rejected", code=body.get("error")
                    )
                return body
        except (UntrustedServer, aiohttp.ServerFingerprintMismatch) as exc:
            raise untrusted(self.url, exc) from exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ExecutorUnavailable(
                f"the executor at {self.url} did not answer ({type(exc).__name__}: {exc}); "
                "is `python -m executor` running and MAO_EXECUTOR_URL right?"
            ) from exc
