"""The executor service's HTTP API as the docker backend calls it: one session that sends the token
only to a proven executor (executors/transport.py), JSON calls whose errors become the seam's, and
the output stream of a submitted container."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from executor.transport import UntrustedServer

from .seam import BackendUnavailable
from .transport import session_target


class Refused(Exception):
    """The executor answered 4xx: ``code`` is its error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ExecutorApi:
    """The HTTP calls of backend ``name`` to the executor at ``url``."""

    def __init__(self, name: str, url: str, token: str, fingerprint: bytes | None = None) -> None:
        self.name = name
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._fingerprint = fingerprint
        self._base = self.url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # The session sends the token only to a server that proved itself (executors/transport.py).
        connector, self._base = session_target(self.url, self._fingerprint)
        # No total timeout on the session: a wait is long-polled; each call sets its own.
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=None), connector=connector
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def output(self, container: str, follow: bool, since: int) -> AsyncIterator[bytes]:
        """The executor answers a follower once the container has started: the empty first chunk
        says so (the seam's start signal). A normal end is the whole output; a cut stream raises
        BackendUnavailable."""
        assert self._session is not None, "DockerBackend.start() was not called"
        # No read timeout when following: a container may be silent for as long as its timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None if follow else 60)
        path = f"{self._base}/containers/{container}/logs"
        params = {"since": str(since), "follow": "1" if follow else "0"}
        try:
            async with self._session.get(path, params=params, timeout=timeout) as response:
                if response.status == 404:
                    return
                if response.status >= 400:
                    raise BackendUnavailable(
                        f"backend {self.name} answered {response.status} for the output of {container}"
                    )
                if follow:
                    yield b""
                async for chunk in response.content.iter_any():
                    yield chunk
        except (UntrustedServer, aiohttp.ServerFingerprintMismatch) as exc:
            raise self._untrusted(exc) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise BackendUnavailable(
                f"backend {self.name}: the output of {container} stopped ({type(exc).__name__}: {exc})"
            ) from exc

    def _untrusted(self, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"backend {self.name}: {_untrusted_message(self.url, exc)}", code="executor_untrusted"
        )

    async def json(self, method: str, path: str, payload: Any, timeout: float) -> dict[str, Any]:
        """The executor's JSON answer; Refused for a 4xx, BackendUnavailable when it fails, does
        not answer, refuses the token or does not prove it is the executor."""
        assert self._session is not None, "DockerBackend.start() was not called"
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
                    raise BackendUnavailable(
                        f"backend {self.name}: the executor refused our token (MAO_EXECUTOR_TOKEN, or "
                        f"MAO_BACKEND_{self.name.upper()}_TOKEN, must be the executor's)",
                        code="executor_unauthorized",
                    )
                if response.status >= 500:
                    raise BackendUnavailable(
                        f"backend {self.name}: the executor failed: {body.get('message') or response.reason}",
                        code=str(body.get("error") or "executor_unavailable"),
                    )
                if response.status >= 400:
                    raise Refused(
                        response.status,
                        str(body.get("error") or "rejected"),
                        str(body.get("message") or response.reason or "rejected"),
                    )
                return body
        except (UntrustedServer, aiohttp.ServerFingerprintMismatch) as exc:
            raise self._untrusted(exc) from exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise BackendUnavailable(
                f"backend {self.name}: the executor at {self.url} did not answer ({type(exc).__name__}: {exc}); "
                "is `python -m executor` running and its URL right?"
            ) from exc


def _untrusted_message(url: str, exc: Exception) -> str:
    return (
        f"the executor at {url} did not prove it is the executor ({exc}); nothing was sent to it: check "
        "its URL and, for https, its pinned certificate (TLS_FINGERPRINT, MAO_EXECUTOR_TLS_FINGERPRINT)"
    )
