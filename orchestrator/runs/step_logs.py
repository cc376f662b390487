"""The full log of every attempt: kept by the orchestrator while it runs (``log_keeper.py``: streamed
from its backend, masked), then gzipped in the data dir, and served (``GET /runs/{id}/log``) whole
or followed live.

Where: ``<data>/logs/<run id>/<object>.log.gz`` (folders 0700, files 0600); while the attempt runs,
its store is ``<data>/logs/<run id>/.<object>.live/``. The object name is unique per attempt
(``seam.Identity.object_name``: instance, run, step position, attempt number, and ``-s<N>`` for a
fan-out shard) and recorded on the attempt's row, so an attempt (or shard attempt) finds its log by
it.

Bounds: at most ``MAO_STEP_LOG_MAX_BYTES`` of an attempt's output, head and tail with a marker line
between (``executor/output_log.py``). Retention: ``forget`` removes the logs of runs the retention
pass has deleted (``retention.py``).

Secrets: every byte kept or followed went through ``Masker`` (``masking.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, cast

from .log_keeper import LogKeeper
from .masking import MIN_SECRET, Masker, masked

__all__ = ["MIN_SECRET", "Masker", "StepLogs", "masked"]

log = logging.getLogger(__name__)

WRITE_BATCH = 1024 * 1024
READ_CHUNK = 64 * 1024
# How long closing waits for keepers still writing their logs.
CLOSE_TIMEOUT = 60.0


class StepLogs:
    def __init__(
        self,
        data_dir: Path,
        existing_runs: Callable[[list[str]], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.root = data_dir / "logs"
        self.existing_runs = existing_runs
        # Keepers at work, by object name: readers follow them, and wait for them to be kept.
        self._keepers: dict[str, LogKeeper] = {}

    def path(self, run_id: str, container: str) -> Path:
        return self.root / run_id / f"{container}.log.gz"

    # -- keeping ------------------------------------------------------------------------------------
    async def keeper(
        self, run_id: str, container: str, secrets: Mapping[str, str] | None, max_bytes: int
    ) -> LogKeeper:
        """A new keeper of the attempt's log, registered (followers find it) and open."""

        async def finish(keeper: LogKeeper) -> None:
            await self._store(run_id, container, keeper)

        def done(keeper: LogKeeper) -> None:
            if self._keepers.get(container) is keeper:
                del self._keepers[container]

        keeper = LogKeeper(
            container, self.root / run_id / f".{container}.live", dict(secrets or {}), max_bytes, finish, done
        )
        old = self._keepers.get(container)
        if old is not None:
            await old.discard()  # before the new one opens: both have the same store folder
        await keeper.open()
        # Registered only once open: a reader that found it earlier got an empty, ended log while
        # the attempt ran (a follower arriving at that moment saw the stream close at once).
        self._keepers[container] = keeper
        return keeper

    async def forget_keeper(self, keeper: LogKeeper) -> None:
        """Drop a keeper without keeping its log (the object goes on for a later process)."""
        await keeper.discard()

    async def close(self) -> None:
        """Let the keepers under way finish (bounded): a log being written is kept before the
        orchestrator stops."""
        keepers = list(self._keepers.values())
        if keepers:
            await asyncio.wait([asyncio.ensure_future(k.done.wait()) for k in keepers], timeout=CLOSE_TIMEOUT)

    async def _store(self, run_id: str, container: str, keeper: LogKeeper) -> None:
        target = self.path(run_id, container)
        part = target.with_name(target.name + ".part")
        handle = await asyncio.to_thread(_open_private, part)
        try:
            batch = bytearray()
            async for chunk in keeper.chunks(follow=False) or _nothing():
                batch += chunk
                if len(batch) >= WRITE_BATCH:
                    await asyncio.to_thread(handle.write, bytes(batch))
                    batch.clear()
            await asyncio.to_thread(_finish, handle, bytes(batch), part, target)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_discard, handle, part))
            raise

    # -- reading ------------------------------------------------------------------------------------
    async def stored(self, run_id: str, container: str) -> AsyncIterator[bytes] | None:
        """The kept log, decompressed in chunks; None when there is none. A log still being kept
        is waited for."""
        if (keeper := self._keepers.get(container)) is not None:
            await keeper.done.wait()
        path = self.path(run_id, container)
        try:
            handle = await asyncio.to_thread(gzip.GzipFile, path, "rb")
        except FileNotFoundError:
            return None
        return _read_all(handle)

    async def reader(self, run_id: str, container: str, follow: bool) -> AsyncIterator[bytes] | None:
        """The attempt's log for a reader: while a keeper has it, as kept so far (masked) and, with
        ``follow``, until it is complete; otherwise the kept log. None when there is neither (not
        submitted yet, or never kept)."""
        keeper = self._keepers.get(container)
        if keeper is None or keeper.done.is_set():
            return await self.stored(run_id, container)
        return self._from_keeper(run_id, container, keeper, follow)

    async def _from_keeper(
        self, run_id: str, container: str, keeper: LogKeeper, follow: bool
    ) -> AsyncIterator[bytes]:
        # Asked for only when read: the keeper may have finished since ``reader`` found it (the
        # answer's headers went out meanwhile). Then its store is gone and the log is the kept one.
        chunks = keeper.chunks(follow) or await self.stored(run_id, container)
        if chunks is not None:
            async for chunk in chunks:
                yield chunk

    # -- retention ----------------------------------------------------------------------------------
    async def forget(self, cutoff: datetime | None = None) -> int:
        """Remove the logs of runs that no longer exist (the retention pass deleted them); returns
        how many runs' logs went. ``cutoff`` is the retention pass's (unused: the database decides)."""
        if self.existing_runs is None:
            return 0
        folders = await asyncio.to_thread(_run_folders, self.root)
        if not folders:
            return 0
        alive = await self.existing_runs(folders)
        gone = [name for name in folders if name not in alive]
        for name in gone:
            await asyncio.to_thread(shutil.rmtree, self.root / name, True)
        if gone:
            log.info("retention: removed the step logs of %d deleted run(s)", len(gone))
        return len(gone)


def _open_private(part: Path) -> gzip.GzipFile:
    for folder in (part.parent.parent, part.parent):  # <data>/logs and its run folder: 0700
        folder.mkdir(mode=0o700, exist_ok=True)
    part.unlink(missing_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    # The GzipFile does not close a file object it was given: _close does.
    return gzip.GzipFile(fileobj=os.fdopen(fd, "wb"), mode="wb", compresslevel=6)


def _close(handle: gzip.GzipFile) -> None:
    inner = cast(IO[bytes] | None, handle.fileobj)
    handle.close()
    if inner is not None:
        inner.close()


def _finish(handle: gzip.GzipFile, rest: bytes, part: Path, target: Path) -> None:
    handle.write(rest)
    _close(handle)
    os.replace(part, target)


def _discard(handle: gzip.GzipFile, part: Path) -> None:
    with contextlib.suppress(Exception):
        _close(handle)
    part.unlink(missing_ok=True)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _read_all(handle: gzip.GzipFile) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def _run_folders(root: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
