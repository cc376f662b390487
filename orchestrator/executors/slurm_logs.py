"""An attempt's log on Slurm: the job's output file on the shared root (``<root>/<name>.out``), read
from a byte offset, and followed while the job runs (each look at the queue, one read of what the
file grew by). File reads happen in worker threads: a network file system may be slow to answer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from .slurm_answers import JobView, parse_report
from .slurm_cli import QueueWatch
from .slurm_files import read_text

CHUNK = 256 * 1024
TAIL_BYTES = 16 * 1024
TAIL_LINES = 40


def read_from(path: Path, offset: int, limit: int = CHUNK) -> bytes:
    """Up to ``limit`` bytes of ``path`` from ``offset`` (b"" when it is not there: not yet, or gone)."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read(limit)
    except FileNotFoundError:
        return b""


def tail(path: Path, lines: int = TAIL_LINES) -> bytes:
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            data = file.read()
    except FileNotFoundError:
        return b""
    return b"\n".join(data.split(b"\n")[-lines - 1 :])


async def read_file(path: Path, offset: int) -> AsyncIterator[bytes]:
    """Everything in ``path`` from ``offset`` to its current end, in chunks."""
    while True:
        chunk = await asyncio.to_thread(read_from, path, offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


async def follow_file(
    path: Path,
    since: int,
    watch: QueueWatch,
    find: Callable[[dict[str, JobView], dict[str, JobView]], JobView | None],
    settle: float,
    report: Path,
) -> AsyncIterator[bytes]:
    """The file from ``since`` until the job has ended and its last bytes are read. An empty chunk
    first, once the job's script says (in ``report``, its stderr) that it starts the container: the
    engine's stall clock starts there, as the step's timeout does, not while the job is queued nor
    while its script checks the image (seconds on a busy node, that are not the tool's silence)."""
    offset, started = since, False
    look_since = time.monotonic()
    while True:
        look = await watch.after(look_since)
        look_since = look.at + 1e-6
        view = find(look.jobs, look.names)
        if not started and (
            view is None or view.has_ended or (view.has_started and await _container_started(report))
        ):
            started = True
            yield b""
        async for chunk in read_file(path, offset):
            offset += len(chunk)
            yield chunk
        if view is None or view.has_ended:
            if settle > 0:
                await asyncio.sleep(settle)  # a network file system shows the node's last writes late
            async for chunk in read_file(path, offset):
                offset += len(chunk)
                yield chunk
            return


async def _container_started(report: Path) -> bool:
    return parse_report(await asyncio.to_thread(read_text, report)).started
