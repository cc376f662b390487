"""The full output of each container, kept in a bounded file while it runs and served by ``GET /logs``.

A container's stdout+stderr goes, as the Docker engine streams it, into numbered segment files of one
private folder per container (``MAO_EXECUTOR_LOG_DIR``, default a fresh 0700 temporary folder). Offsets
are absolute byte positions in the container's output. At most ``max_bytes`` are kept: the head (the
first half, in whole segments) and the tail (the newest segments); a middle segment is deleted when the
tail grows past its share. A reader that reaches a deleted stretch gets one marker line instead,

    [mao: N bytes of output omitted here: the log exceeded MAO_STEP_LOG_MAX_BYTES]

and goes on at the oldest tail segment, so the full log of a step that printed too much is its head,
the marker and its tail.

Threads: one writer (the engine's log stream, on a worker thread) calls ``write`` and ``end``; readers
live on the event loop and read through ``asyncio.to_thread``. A reader with ``follow`` waits for new
bytes until ``end`` (the container stopped and its stream drained). Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from .private_folder import make_private

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
READ_CHUNK = 64 * 1024
# An ended log nobody fetched (the orchestrator away) goes after this long.
KEEP_ENDED = 3600.0
# A follower re-checks at least this often, so a lost wake-up costs a second, never a hang.
FOLLOW_POLL = 1.0


def marker(omitted: int) -> bytes:
    return (
        f"\n[mao: {omitted} bytes of output omitted here: the log exceeded MAO_STEP_LOG_MAX_BYTES]\n"
    ).encode()


class OutputLog:
    """One container's output (see the module docstring)."""

    def __init__(self, folder: Path, max_bytes: int, loop: asyncio.AbstractEventLoop) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment = max(4096, min(1024 * 1024, max_bytes // 16))
        self.head_segments = (max_bytes // 2) // self.segment
        self.tail_segments = max(1, (max_bytes - self.head_segments * self.segment) // self.segment)
        self.written = 0
        self.ended_at: float | None = None
        self._kept: list[int] = []  # segment numbers on disk, ascending
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._loop = loop
        self._waiters: set[asyncio.Future[None]] = set()
        folder.mkdir(mode=0o700)

    # -- the writer (a worker thread) -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        with self._lock:
            if self.ended_at is not None:
                return
            while data:
                number, offset = divmod(self.written, self.segment)
                if offset == 0:
                    self._open_segment(number)
                part = data[: self.segment - offset]
                assert self._file is not None
                self._file.write(part)
                self._file.flush()
                self.written += len(part)
                data = data[len(part) :]
        self._wake()

    def _open_segment(self, number: int) -> None:
        if self._file is not None:
            self._file.close()
        tail = [n for n in self._kept if n >= self.head_segments]
        if number >= self.head_segments and len(tail) >= self.tail_segments:
            oldest = tail[0]
            self._kept.remove(oldest)
            with contextlib.suppress(FileNotFoundError):
                self._path(oldest).unlink()
        self._file = open(self._path(number), "xb")  # noqa: SIM115 (closed at the next segment or end)
        self._kept.append(number)

    def end(self) -> None:
        """The container's output is complete: followers finish once they have read it all."""
        with self._lock:
            if self.ended_at is None:
                self.ended_at = time.monotonic()
                if self._file is not None:
                    self._file.close()
                    self._file = None
        self._wake()

    def _path(self, number: int) -> Path:
        return self.folder / f"{number:08d}"

    def _wake(self) -> None:
        if self._waiters:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    # -- readers ------------------------------------------------------------------------------------
    def read(self, offset: int, limit: int = READ_CHUNK) -> tuple[bytes, int]:
        """Bytes from ``offset`` (at most ``limit``) and the offset after them; the marker when
        ``offset`` lies in an omitted stretch. Blocks on the disk: call it from a thread."""
        with self._lock:
            if offset >= self.written:
                return b"", offset
            number, inside = divmod(offset, self.segment)
            if number not in self._kept:
                return self._gap(offset, number)
            size = min(limit, self.segment - inside, self.written - offset)
            with open(self._path(number), "rb") as handle:
                handle.seek(inside)
                data = handle.read(size)
            if offset + len(data) == (number + 1) * self.segment and self._dropped(number + 1):
                # The last bytes before the omitted stretch: whole lines only, so the cut never
                # splits a line (nor a secret in it, which the orchestrator could not mask then).
                cut = data.rfind(b"\n")
                if cut < 0:
                    return self._gap(offset, number)
                data = data[: cut + 1]
            return data, offset + len(data)

    def _dropped(self, number: int) -> bool:
        return number * self.segment < self.written and number not in self._kept

    def _gap(self, offset: int, number: int) -> tuple[bytes, int]:
        """The marker for the stretch from ``offset``, and where reading goes on: at the first whole
        line of the oldest tail segment (its partial first line is left out too)."""
        resume = next((n for n in self._kept if n > number), None)
        if resume is None:
            return marker(self.written - offset), self.written
        target = resume * self.segment
        with open(self._path(resume), "rb") as handle:
            start = handle.read(self.segment)
        newline = start.find(b"\n")
        if newline >= 0:
            target += newline + 1
        return marker(target - offset), target

    async def chunks(self, follow: bool) -> AsyncIterator[bytes]:
        """The log from its start; with ``follow``, new output as it comes until the log ends."""
        offset = 0
        while True:
            data, offset = await asyncio.to_thread(self.read, offset)
            if data:
                yield data
                continue
            if not follow or (self.ended_at is not None and offset >= self.written):
                return
            waiter = self._loop.create_future()
            self._waiters.add(waiter)
            try:
                # Checked again once registered: a write between the read and here woke nobody.
                if offset >= self.written and self.ended_at is None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(FOLLOW_POLL):  # not wait_for: it can swallow a cancel
                            await waiter
            finally:
                self._waiters.discard(waiter)

    def remove(self) -> None:
        self.end()
        shutil.rmtree(self.folder, ignore_errors=True)


class LogBook:
    """Every container's ``OutputLog``, by container name, under one private folder."""

    def __init__(self, folder: str | None = None) -> None:
        if folder:
            self.root = Path(folder)
            # Refuses a shared folder: the leftovers removed below would be other people's files.
            make_private(self.root)
            self._own_root = False
            for leftover in self.root.iterdir():  # logs of containers a crash left: gone with them
                shutil.rmtree(leftover, ignore_errors=True)
        else:
            self.root = Path(tempfile.mkdtemp(prefix="mao-executor-logs-"))
            self._own_root = True
        self._logs: dict[str, OutputLog] = {}
        self._count = 0

    def open(self, name: str, max_bytes: int) -> OutputLog:
        """A new, empty log for container ``name`` (replacing an older log of that name)."""
        self.sweep()
        old = self._logs.pop(name, None)
        if old is not None:
            old.remove()
        self._count += 1
        folder = self.root / f"{self._count:06d}-{name}"
        output = OutputLog(folder, max_bytes, asyncio.get_running_loop())
        self._logs[name] = output
        return output

    def get(self, name: str) -> OutputLog | None:
        return self._logs.get(name)

    def drop(self, name: str) -> bool:
        output = self._logs.pop(name, None)
        if output is None:
            return False
        output.remove()
        return True

    def sweep(self) -> None:
        """Forget ended logs nobody fetched within ``KEEP_ENDED``."""
        now = time.monotonic()
        for name, output in list(self._logs.items()):
            if output.ended_at is not None and now - output.ended_at > KEEP_ENDED:
                self.drop(name)

    def close(self) -> None:
        for name in list(self._logs):
            self.drop(name)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
