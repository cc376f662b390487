"""The backend's own copy of every attempt's log (docs/backends.md#kubernetes): a pod and its log vanish
(``ttlSecondsAfterFinished``, eviction, a node lost), so the tool container's log is copied while it
runs into ``<folder>/<attempt>.log`` and served from there, by byte offset, to whoever asks.

The copy is made of the API's log lines with their timestamps (``timestamps=true``), one record a
line, appended whole. The API can resume a log only from a whole second (``sinceTime``), so after a
dropped stream the copier asks again from the second of the last line it kept and skips what it has:
every line stamped earlier, and as many lines stamped exactly like the last one as it kept. Nothing is
lost or doubled, across an orchestrator restart too (the file is the bookkeeping). ``<attempt>.done``
marks a copy that is complete (the tool ended and its log was read to the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .kube_api import KubeApi, KubeInvalid, KubeNotFound
from .kube_pod import TOOL
from .seam import BackendUnavailable

log = logging.getLogger(__name__)

TAIL_LINES = 50
TAIL_BYTES = 64 * 1024
_RETRY = 1.0
_WAIT = 0.2
_READ_CHUNK = 1 << 16



@dataclass(frozen=True)
class ToolState:
    """Where an attempt's tool stands, as the backend's watch last saw it."""

    pod: str | None  # its pod's name, once there is one
    started: bool  # the tool container has started (it may have ended since)
    ended: bool  # the tool container has ended
    gone: bool  # no more log will come: the Job or pod is gone, or the attempt ended before the tool ran


ToolStateOf = Callable[[str], Awaitable[ToolState]]
# Returns at the next change of the attempt's Job or pods, or after the given seconds.
ChangedOf = Callable[[str, float], Awaitable[None]]


def split_record(record: bytes) -> tuple[bytes, bytes]:
    """(timestamp, content) of one line as the API sends it with ``timestamps=true``."""
    stamp, _, content = record.partition(b" ")
    return stamp, content


def whole_second(stamp: bytes) -> str:
    """``2026-01-02T03:04:05.123456789Z`` -> ``2026-01-02T03:04:05Z`` (sinceTime's precision)."""
    text = stamp.decode("ascii", "replace")
    head, dot, _ = text.partition(".")
    return head + "Z" if dot else text


def _stamp_key(stamp: bytes) -> tuple[str, int]:
    """Stamps compare as (whole second, nanoseconds): RFC 3339 leaves out trailing zeros."""
    text = stamp.decode("ascii", "replace").rstrip("Z")
    head, _, fraction = text.partition(".")
    return head, int((fraction + "000000000")[:9] or 0)


@dataclass
class _Resume:
    last: bytes | None = None  # the latest timestamp of a kept line
    same: int = 0  # how many kept lines carry exactly that timestamp
    skip: int = 0  # in the current stream: lines stamped like ``boundary`` still to skip (kept already)
    boundary: bytes | None = None  # ``last`` when the current stream began: what is older was kept

    def start(self) -> str | None:
        """A new stream begins: the ``sinceTime`` to ask it from (None: from the start)."""
        self.boundary, self.skip = self.last, self.same
        return whole_second(self.last) if self.last is not None else None

    def keep(self, stamp: bytes) -> bool:
        """Whether a line of the current stream stamped ``stamp`` is new (and count it if so). Within
        one stream lines may come slightly out of order (the engine copies stdout and stderr
        separately, each line stamped when read): only lines from before the stream's start are
        judged by their stamp."""
        key = _stamp_key(stamp)
        if self.boundary is not None:
            boundary = _stamp_key(self.boundary)
            if key < boundary:
                return False
            if key == boundary and self.skip > 0:
                self.skip -= 1
                return False
        if self.last is None or key > _stamp_key(self.last):
            self.last, self.same = stamp, 1
        elif key == _stamp_key(self.last):
            self.same += 1
        return True


def resume_point(path: Path) -> _Resume:
    """Where a copy stands, from its file (a torn last record is cut off first)."""
    resume = _Resume()
    try:
        with open(path, "rb+") as file:
            data = file.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                file.truncate(end)
            data = data[:end]
    except FileNotFoundError:
        return resume
    for record in data.splitlines():
        stamp, _ = split_record(record)
        if stamp == resume.last:
            resume.same += 1
        else:
            resume.last, resume.same = stamp, 1
    return resume


@dataclass
class _Copy:
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    streaming: bool = False  # a stream of the tool's log was opened: the tool has started


class KeptLogs:
    def __init__(self, api: KubeApi, folder: Path, state_of: ToolStateOf, changed: ChangedOf) -> None:
        self._api = api
        self.folder = folder
        self._state_of = state_of
        self._changed = changed
        self._copies: dict[str, _Copy] = {}

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def _done_path(self, name: str) -> Path:
        return self.folder / f"{name}.done"

    def complete(self, name: str) -> bool:
        return self._done_path(name).exists()

    def ensure(self, name: str) -> _Copy:
        """The copy of ``name``, its copier started unless it is complete or under way."""
        copy = self._copies.setdefault(name, _Copy())
        if (copy.task is None or copy.task.done()) and not self.complete(name):
            copy.task = asyncio.create_task(self._copy(name, copy), name=f"kube-log-{name}")
        return copy

    async def finished(self, name: str) -> None:
        """Return once the copy is complete (the copier read the ended tool's log to its end)."""
        copy = self.ensure(name)
        if copy.task is not None:
            await asyncio.shield(copy.task)

    async def close(self) -> None:
        tasks = [c.task for c in self._copies.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def discard(self, name: str) -> None:
        copy = self._copies.pop(name, None)
        if copy is not None and copy.task is not None:
            copy.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await copy.task
        for path in (self._path(name), self._done_path(name)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def names(self) -> list[str]:
        try:
            return sorted(e.name[: -len(".log")] for e in os.scandir(self.folder) if e.name.endswith(".log"))
        except FileNotFoundError:
            return []

    # -- the copier ------------------------------------------------------------------------------------

    async def _copy(self, name: str, copy: _Copy) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(name)
        resume = await asyncio.to_thread(resume_point, path)
        while True:
            try:
                state = await self._state_of(name)
            except BackendUnavailable as exc:
                log.info("log of %s: %s; trying again", name, exc.message)
                await asyncio.sleep(_RETRY)
                continue
            if state.gone:
                self._mark_done(name, copy)
                return
            if not state.started or state.pod is None:
                await self._changed(name, 1.0)
                continue
            since = resume.start()
            try:
                with open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab", buffering=0) as out:
                    copy.streaming = True
                    copy.changed.set()
                    async for record in self._api.log_lines(state.pod, TOOL, since, follow=True):
                        if not record.endswith(b"\n"):
                            record += b"\n"  # a last line without one: kept whole, the framing intact
                        if resume.keep(split_record(record)[0]):
                            out.write(record)
                            copy.changed.set()
            except (KubeNotFound, KubeInvalid) as exc:
                # The pod is gone, or its tool's container is not there (not yet, or no more): the
                # pod's state below says which.
                log.info("log of %s: %s", name, exc)
                await asyncio.sleep(_RETRY)
            except BackendUnavailable as exc:
                log.info("log of %s broke off: %s; resuming", name, exc.message)
                await asyncio.sleep(_RETRY)
            # The stream ended: the end of the log once the tool has ended, else a drop.
            with contextlib.suppress(BackendUnavailable):
                state = await self._state_of(name)
                if state.ended or state.gone:
                    self._mark_done(name, copy)
                    return
            await self._changed(name, _WAIT)

    def _mark_done(self, name: str, copy: _Copy) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._done_path(name).touch(mode=0o600)
        copy.changed.set()

    # -- readers -----------------------------------------------------------------------------------------

    async def read(self, name: str, *, follow: bool, since: int) -> AsyncIterator[bytes]:
        """The tool's output from byte ``since`` on; with ``follow``, until the copy is complete (an
        empty chunk first, once the tool has started)."""
        copy = self.ensure(name) if follow else self._copies.get(name, _Copy())
        path = self._path(name)
        position, skipped, rest, announced = 0, 0, b"", False
        while True:
            copy.changed.clear()
            complete = self.complete(name)
            data = await asyncio.to_thread(_read_from, path, position)
            position += len(data)
            rest += data
            cut = rest.rfind(b"\n") + 1
            whole, rest = rest[:cut], rest[cut:]
            out = b"".join(split_record(r)[1] for r in whole.splitlines(keepends=True))
            if skipped < since:
                drop = min(since - skipped, len(out))
                skipped += drop
                out = out[drop:]
            if follow and not announced and (copy.streaming or complete or out):
                announced = True
                yield b""
            if out:
                yield out
            if not follow or (complete and not data):
                return
            if not data:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(copy.changed.wait(), 1.0)

    def tail(self, name: str, secrets: Mapping[str, str]) -> str:
        """The last lines of the copy, private values masked (a small read: at the end of an attempt)."""
        try:
            with open(self._path(name), "rb") as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - 4 * TAIL_BYTES))
                data = file.read()
        except FileNotFoundError:
            return ""
        records = data.splitlines(keepends=True)
        if size > 4 * TAIL_BYTES and records:
            records = records[1:]  # the first may be cut
        content = b"".join(split_record(r)[1] for r in records)[-TAIL_BYTES:]
        text = b"".join(content.splitlines(keepends=True)[-TAIL_LINES:]).decode("utf-8", "replace")
        for value in secrets.values():
            if value:
                text = text.replace(value, "***")
        return text


def _read_from(path: Path, position: int) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(position)
            return file.read(_READ_CHUNK * 16)
    except FileNotFoundError:
        return b""
