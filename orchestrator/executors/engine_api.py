"""The Docker Engine API over aiohttp, for the backends that talk to a Docker engine themselves (swarm.py).

Why not the Docker SDK in worker threads: a followed log holds its call for the attempt's whole life,
and the default thread pool has a handful of threads (``min(32, cpus + 4)``); 200 shards followed at
once would starve every other ``to_thread`` call of the orchestrator (git, files). Over aiohttp a follow
costs one idle connection and the event loop never blocks.

Errors are translated here, once: an engine that cannot be asked (connection refused, timeout, a 5xx)
is ``BackendUnavailable``; a 404 is ``EngineNotFound``, a 409 ``EngineConflict``, any other 4xx
``EngineError``, each with the engine's own message.
"""

from __future__ import annotations

import json
import ssl
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from ..config.backends.swarm import DEFAULT_HOST, DEFAULT_VERSION, TlsFiles
from .seam import BackendUnavailable

_FRAME_HEADER = struct.Struct(">BxxxL")


class EngineError(Exception):
    """The engine answered, and refused (a 4xx): ``status`` and the engine's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EngineNotFound(EngineError):
    pass


class EngineConflict(EngineError):
    pass


class FrameReader:
    """Docker's multiplexed output (stdout and stderr in frames: an 8-byte header of stream number,
    three zero bytes and a big-endian size) turned back into the payload bytes, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while len(self._buffer) >= _FRAME_HEADER.size:
            _, size = _FRAME_HEADER.unpack_from(self._buffer)
            end = _FRAME_HEADER.size + size
            if len(self._buffer) < end:
                break
            out += self._buffer[_FRAME_HEADER.size : end]
            del self._buffer[:end]
        return bytes(out)


class EngineApi:
    """One Docker engine (``host``: ``unix:///...`` or ``tcp://host:port``), its API at ``version``."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        *,
        version: str = DEFAULT_VERSION,
        tls: TlsFiles | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self._tls = tls
        self._timeout = timeout
        parts = urlsplit(host)
        if parts.scheme == "unix":
            self._socket: str | None = parts.path
            self._base = f"http://docker/v{version}"
        else:
            self._socket = None
            scheme = "https" if tls is not None else "http"
            self._base = f"{scheme}://{parts.hostname}:{parts.port}/v{version}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector: aiohttp.BaseConnector
        # No connection limit: every followed log holds one connection for the attempt's life.
        if self._socket is not None:
            connector = aiohttp.UnixConnector(path=self._socket, limit=0)
        else:
            ssl_context: ssl.SSLContext | bool = self._tls.context() if self._tls is not None else False
            connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_or_fail(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("EngineApi.start() was not called")
        return self._session

    def path(self, template: str, *names: str) -> str:
        """``template`` with each ``{}`` replaced by a URL-quoted name (ids and names go in paths)."""
        return template.format(*(quote(name, safe="") for name in names))

    async def call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """One request; the JSON answer (None for an empty one). ``what`` says what was being done."""
        session = self._session_or_fail()
        try:
            async with session.request(
                method,
                self._base + path,
                params=params,
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise self._error(response.status, raw, what)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(what, exc) from exc
        return json.loads(raw) if raw.strip() else None

    @asynccontextmanager
    async def stream(
        self, path: str, what: str, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed GET (logs): the open response; the caller reads it and leaves to close it."""
        session = self._session_or_fail()
        try:
            response = await session.get(
                self._base + path,
                params=params,
                timeout=aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_connect=self._timeout),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(what, exc) from exc
        try:
            if response.status >= 400:
                raise self._error(response.status, await response.read(), what)
            yield response
        finally:
            response.close()

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        reason = str(exc) or type(exc).__name__
        return BackendUnavailable(
            f"the Docker engine at {self.host} did not answer while {what}: {reason}; check that it runs "
            "and that the backend's DOCKER_HOST setting points at it"
        )

    def _error(self, status: int, raw: bytes, what: str) -> Exception:
        try:
            message = str(json.loads(raw).get("message") or "")
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace").strip()
        message = message or f"HTTP {status}"
        if status >= 500:
            return BackendUnavailable(f"the Docker engine at {self.host} failed while {what}: {message}")
        if status == 404:
            return EngineNotFound(status, message)
        if status == 409:
            return EngineConflict(status, message)
        return EngineError(status, message)


def filters(**values: list[str]) -> dict[str, str]:
    """The ``filters`` query parameter of the list endpoints."""
    return {"filters": json.dumps(values)}
