"""A swarm service's log, from the service log stream (``docker service logs --raw``, over the API).

Swarm's followed log never ends by itself (it waits for more tasks): it is cut once the watch saw the
task end (plus the log settle time), then one more read from the start hands out whatever the followed
stream had not carried. A stream that drops while the task runs is opened again. Every stream is read
from the log's first byte and ``_Cursor`` skips what was handed out already, so a reader resuming at
byte ``since`` loses and doubles nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from ..errors import NotFound
from .engine_api import EngineApi, EngineNotFound, FrameReader
from .seam import BackendUnavailable
from .swarm_watch import ENDED, TASK_RUNNING, ServiceView, SwarmWatch

log = logging.getLogger(__name__)

TAIL_LINES = 50
TAIL_BYTES = 64 * 1024


class _Cursor:
    """Where a reader of the log is: ``position`` bytes of the log were handed out or skipped (the
    first ``since``); each new stream starts again at the log's first byte (``restart``)."""

    def __init__(self, since: int) -> None:
        self.since = since
        self.position = 0
        self.streams = 0
        self._got = 0

    def restart(self) -> None:
        self._got = 0

    def take(self, chunk: bytes) -> bytes:
        fresh = chunk[max(0, self.position - self._got) :]
        self._got += len(chunk)
        if not fresh:
            return b""
        start = self.position
        self.position += len(fresh)
        return fresh[max(0, self.since - start) :]


class ServiceLogs:
    def __init__(
        self, api: EngineApi, watch: SwarmWatch, backend: str, *, settle: float, retry: float
    ) -> None:
        self._api = api
        self._watch = watch
        self._backend = backend
        self._settle = settle
        self._retry = retry

    async def read(self, name: str, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        """The log of service ``name`` from byte ``since``; with ``follow`` until its task ended, and
        an empty chunk first, once the task has started (the caller's stall clock starts there: time
        waiting to be scheduled is not silence). NotFound when there is no such service."""
        cursor = _Cursor(since)
        if follow:
            with self._watch.interest(name):
                await self._started(name)
                yield b""
                ended = asyncio.create_task(self._ended(name))
                try:
                    while not ended.done():
                        cursor.restart()
                        try:
                            async for chunk in self._stream(name, follow=True, until=ended):
                                part = cursor.take(chunk)
                                if part:
                                    yield part
                        except NotFound:
                            if cursor.streams == 0:
                                raise
                            break
                        cursor.streams += 1
                        if not ended.done():
                            await asyncio.sleep(self._retry)  # the stream dropped: open it again
                finally:
                    ended.cancel()
                    if ended.done() and not ended.cancelled() and ended.exception() is not None:
                        log.debug(
                            "Backend %s: the end of %s was not seen: %s",
                            self._backend,
                            name,
                            ended.exception(),
                        )
        cursor.restart()
        try:
            async for chunk in self._stream(name, follow=False):
                part = cursor.take(chunk)
                if part:
                    yield part
        except NotFound:
            if not follow:
                raise

    async def tail(self, name: str, secrets: Mapping[str, str], container: str | None = None) -> str:
        """The last lines of the log, private values masked ("" when it cannot be read). From the task's
        ``container`` when it is on this engine's node: the engine reads its file, where the service's
        log is gathered from the nodes through the managers."""
        chunks = []
        try:
            async for chunk in self._stream(name, follow=False, tail=TAIL_LINES, container=container):
                chunks.append(chunk)
        except (NotFound, BackendUnavailable):
            return ""
        text = b"".join(chunks)[-TAIL_BYTES:].decode("utf-8", "replace")
        for value in secrets.values():
            if value:
                text = text.replace(value, "***")
        return text

    async def _until(self, name: str, reached: Callable[[ServiceView | None], bool]) -> None:
        """Return once ``reached`` holds for the service as the watch sees it (None: not there)."""
        seen, begun_after = 0, time.monotonic()
        while True:
            current = await self._watch.after(seen, begun_after)
            seen = current.number
            if reached(current.services.get(name)):
                return

    async def _started(self, name: str) -> None:
        """Return once the service's task runs or ran; NotFound when the service is not there."""

        def reached(view: ServiceView | None) -> bool:
            if view is None:
                raise NotFound(f"backend {self._backend!r} holds no service {name!r} (removed?)")
            return view.state == TASK_RUNNING or view.state in ENDED

        await self._until(name, reached)

    async def _ended(self, name: str) -> None:
        """Return once the service's task ended (or the service is gone), plus the settle time."""
        await self._until(name, lambda view: view is None or view.state in ENDED)
        await asyncio.sleep(self._settle)

    async def _stream(
        self,
        name: str,
        *,
        follow: bool,
        tail: int | None = None,
        until: asyncio.Task[None] | None = None,
        container: str | None = None,
    ) -> AsyncIterator[bytes]:
        """The log's payload bytes (stdout and stderr in their order), until its end, or ``until`` is
        done. A followed stream that drops simply ends (the caller opens another); a plain read that
        drops raises BackendUnavailable."""
        params = {"stdout": "1", "stderr": "1", "follow": "1" if follow else "0"}
        if tail is not None:
            params["tail"] = str(tail)
        reader = FrameReader()
        try:
            if container is not None:
                path = self._api.path("/containers/{}/logs", container)
            else:
                path = self._api.path("/services/{}/logs", name)
            async with self._api.stream(path, f"reading the log of {name}", params=params) as response:
                while True:
                    read = asyncio.ensure_future(response.content.readany())
                    waits: set[asyncio.Future[Any]] = {read}
                    if until is not None:
                        waits.add(until)
                    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    if read not in done:
                        read.cancel()
                        return
                    try:
                        data = read.result()
                    except (aiohttp.ClientError, OSError) as exc:
                        if follow:
                            return
                        raise BackendUnavailable(f"the log of {name} broke off: {exc}") from exc
                    if not data:
                        return
                    payload = reader.feed(data)
                    if payload:
                        yield payload
        except EngineNotFound as exc:
            raise NotFound(f"backend {self._backend!r} holds no service {name!r} (removed?)") from exc
