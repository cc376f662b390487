"""The orchestrator's own copy of one attempt's log, streamed from its backend while it runs.

A keeper follows the object's output (``Backend.logs(handle, follow=True, since=N)``) from the
moment it was submitted. A stream that drops (the backend restarted, the network blinked) is asked
again with ``since`` = the bytes received so far, so nothing is lost or doubled; a stream that ends
normally has sent everything. What arrives is masked (``Masker``: the step's private values become
``***``, across chunk boundaries too) and written to a bounded store of segments (the head and the
newest tail beyond ``MAO_STEP_LOG_MAX_BYTES``, one marker line between: ``executor/output_log.py``),
which live readers (``GET /runs/{id}/log?follow=1``) follow. Once the stream is complete (or the
attempt has ended and the backend stayed away for ``KEEP_TIMEOUT``), the store becomes the kept
``<container>.log.gz`` (``step_logs.py``).

The keeper is also the engine's ear for silence: ``silent_for`` is the time since the last output
(or since the object started: backends yield an empty chunk then), counted only while the stream
is connected, so a backend that is away never makes a tool look stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

from executor.output_log import OutputLog

from ..executors.seam import Backend, BackendUnavailable, Handle
from ..retry import Backoff
from ..tasks import spawn
from .masking import Masker

log = logging.getLogger(__name__)

# After the attempt's end, how long a keeper waits for a backend that went away before it keeps
# what it has.
KEEP_TIMEOUT = 300.0
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0

Finish = Callable[["LogKeeper"], Awaitable[None]]


class LogKeeper:
    def __init__(
        self,
        name: str,
        store: Path,
        secrets: Mapping[str, str] | None,
        max_bytes: int,
        finish: Finish,
        on_done: Callable[[LogKeeper], None] = lambda _keeper: None,
    ) -> None:
        self.name = name
        self.received = 0  # raw bytes from the backend (before masking): the next ``since``
        self.reconnects = 0
        self.started: float | None = None  # monotonic: when the object started (its first chunk)
        self.complete = False  # the backend's stream ended normally: every byte is here
        self._last: float | None = None
        self._connected = False
        self._ended_at: float | None = None
        self._masker = Masker(secrets)
        self._store_path = store
        self._max_bytes = max_bytes
        self._store: OutputLog | None = None
        self._finish = finish
        self._on_done = on_done
        self._task: asyncio.Task[None] | None = None
        self._readers = 0
        self._followed = False  # nothing was submitted: nothing to keep
        self._discarding = False
        self._finishing = False
        self.done = asyncio.Event()

    async def open(self) -> None:
        """The empty store (a stale one a crashed process left is discarded): readers find it."""
        loop = asyncio.get_running_loop()

        def make() -> OutputLog:
            shutil.rmtree(self._store_path, ignore_errors=True)
            for folder in (self._store_path.parent.parent, self._store_path.parent):  # logs/, logs/<run>/
                folder.mkdir(mode=0o700, exist_ok=True)
            return OutputLog(self._store_path, self._max_bytes, loop)

        self._store = await asyncio.to_thread(make)

    # -- the engine's side -------------------------------------------------------------------------
    def follow(self, backend: Backend, handle: Handle) -> None:
        if self._task is None:
            self._followed = True
            self._task = spawn(self._follow(backend, handle), f"log of {handle.name}")

    def silent_for(self, now: float) -> float:
        """Seconds without output while connected to a started object (0 otherwise)."""
        if not self._connected or self._last is None:
            return 0.0
        return now - self._last

    def ended(self) -> None:
        """The attempt has ended: the stream has ``KEEP_TIMEOUT`` more to complete."""
        if self._ended_at is None:
            self._ended_at = time.monotonic()

    async def stop(self) -> None:
        """Stop following now (the object is gone or being abandoned); keeps what has arrived."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.close()

    async def close(self) -> None:
        """Until the keeper has finished (``finish`` ran); one that never followed finishes now."""
        if self._task is None:
            self._task = spawn(self._finished(), f"keep the log of {self.name}")
        await asyncio.wait({self._task})

    async def discard(self) -> None:
        """Forget everything (the object lives on for another process to keep from its start)."""
        self._discarding = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._on_done(self)  # unregistered first: no reader finds a keeper without its store
        await self._remove_store()
        self.done.set()

    # -- following ----------------------------------------------------------------------------------
    async def _follow(self, backend: Backend, handle: Handle) -> None:
        backoff = Backoff(RECONNECT_FIRST, RECONNECT_MAX, jitter=False)  # one stream's own reconnects
        try:
            while True:
                try:
                    async for chunk in backend.logs(handle, follow=True, since=self.received):
                        now = time.monotonic()
                        self._connected = True
                        self.started = self.started or now
                        self._last = now
                        if chunk:
                            self.received += len(chunk)
                            await self._write(self._masker.feed(chunk))
                        backoff.reset()
                    self.complete = True
                    return
                except BackendUnavailable as exc:
                    self._connected = False
                    if self._ended_at is not None and time.monotonic() - self._ended_at > KEEP_TIMEOUT:
                        log.warning("the log of %s was kept incomplete: %s", handle.name, exc.message)
                        return
                    self.reconnects += 1
                    log.debug(
                        "the log stream of %s dropped (%s); again from byte %d",
                        handle.name,
                        exc.message,
                        self.received,
                    )
                    await asyncio.sleep(backoff.next())
        finally:
            self._connected = False
            if not self._discarding:
                await asyncio.shield(self._finished())

    async def _finished(self) -> None:
        if self.done.is_set():
            return
        try:
            await self._write(self._masker.flush())
            if self._store is not None:
                await asyncio.to_thread(self._store.end)
            if self._followed:
                await self._finish(self)
        except Exception:
            log.exception("the log of %s was not kept", self.name)
        finally:
            self._finishing = True
            self._on_done(self)  # unregistered first: a reader from now on reads the kept log
            if not self._readers:
                await self._remove_store()
            self.done.set()

    async def _remove_store(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.remove)

    async def _write(self, data: bytes) -> None:
        if data and self._store is not None:
            await asyncio.to_thread(self._store.write, data)

    # -- readers ------------------------------------------------------------------------------------
    def chunks(self, follow: bool) -> AsyncIterator[bytes] | None:
        """The masked log so far; with ``follow``, as it comes until the keeper is done. The store
        stays until its last reader is through (the kept log is written from it meanwhile). None
        once the store is gone (kept or discarded): an empty log would look like a finished one.
        Read at once: the reader counts from the first chunk asked for."""
        store = self._store
        return None if store is None else self._read(store, follow)

    async def _read(self, store: OutputLog, follow: bool) -> AsyncIterator[bytes]:
        self._readers += 1
        try:
            async for chunk in store.chunks(follow):
                yield chunk
        finally:
            self._readers -= 1
            if self._finishing and not self._readers:
                await asyncio.shield(self._remove_store())
