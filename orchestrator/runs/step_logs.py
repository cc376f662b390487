"""The full log of every attempt: fetched from the executor when its container ends, masked, kept
gzipped in the data dir, and served (``GET /runs/{id}/log``) or followed live from the executor.

Where: ``<data>/logs/<run id>/<container>.log.gz`` (folders 0700, files 0600). The container name is
unique per attempt (``attempt.container_name``: run, step position, attempt number, and ``-s<N>`` for a
fan-out shard) and recorded on the attempt's row, so an attempt (or shard attempt) finds its log by it.

Bounds: the executor keeps at most the request's ``log_max_bytes`` (``MAO_STEP_LOG_MAX_BYTES``) of a
container's output, head and tail with a marker line between (``executor/output_log.py``); what is
kept here is that, compressed. Retention: ``forget`` removes the logs of runs the retention pass has
deleted (``retention.py``).

Secrets: every byte that leaves through here, stored or followed, went through ``Masker``, which
replaces the step's private env values by ``***`` exactly as the run record's log tail
(``attempt.redact``), across chunk boundaries too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

from ..errors import MaoError, NotFound
from ..executors import ExecutorBackend
from ..tasks import spawn

log = logging.getLogger(__name__)

# How long fetching one ended attempt's log may take before it is given up (the attempt's outcome
# never waits longer than this for its log).
KEEP_TIMEOUT = 300.0
WRITE_BATCH = 1024 * 1024
READ_CHUNK = 64 * 1024
MIN_SECRET = 4  # shorter values are not masked (they would mask half the log), as in the tails


class Masker:
    """Replaces secret values by ``***`` in a stream of bytes. ``feed`` holds back only the end of
    what it was given that is the start of a secret (the next chunk may complete it), so a follower
    is never kept waiting for output that cannot be a secret; ``flush`` gives it at the end."""

    def __init__(self, secrets: Mapping[str, str] | None) -> None:
        values = {v.encode() for v in (secrets or {}).values() if len(v) >= MIN_SECRET}
        self.values = sorted(values, key=len, reverse=True)
        self._carry = b""

    def _mask(self, data: bytes) -> bytes:
        for value in self.values:
            data = data.replace(value, b"***")
        return data

    def feed(self, chunk: bytes) -> bytes:
        if not self.values:
            return chunk
        data = self._mask(self._carry + chunk)
        # A secret still unmasked in ``data`` runs past its end: data ends with a proper prefix of it.
        hold = self._open_prefix(data)
        cut = len(data) - hold
        self._carry = data[cut:]
        return data[:cut]

    def _open_prefix(self, data: bytes) -> int:
        longest = 0
        for value in self.values:
            for size in range(min(len(value) - 1, len(data)), longest, -1):
                if data.endswith(value[:size]):
                    longest = size
                    break
        return longest

    def flush(self) -> bytes:
        out, self._carry = self._carry, b""
        return out


async def masked(chunks: AsyncIterator[bytes], secrets: Mapping[str, str] | None) -> AsyncIterator[bytes]:
    masker = Masker(secrets)
    async for chunk in chunks:
        if out := masker.feed(chunk):
            yield out
    if out := masker.flush():
        yield out


class StepLogs:
    def __init__(
        self,
        data_dir: Path,
        executor: ExecutorBackend,
        existing_runs: Callable[[list[str]], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.root = data_dir / "logs"
        self.executor = executor
        self.existing_runs = existing_runs
        self._later: set[asyncio.Task[object]] = set()
        # Keeps still under way, by container: a reader of that log waits for its keep (``stored``).
        self._keeping: dict[str, asyncio.Task[object]] = {}

    def path(self, run_id: str, container: str) -> Path:
        return self.root / run_id / f"{container}.log.gz"

    # -- keeping ------------------------------------------------------------------------------------
    async def keep(self, run_id: str, container: str, secrets: Mapping[str, str] | None) -> bool:
        """Fetch the ended container's log from the executor and keep it (masked, gzipped); then let
        the executor forget it. Never raises: a log that cannot be kept is logged, never a step failure."""
        try:
            async with asyncio.timeout(KEEP_TIMEOUT):
                await self._store(run_id, container, masked(self.executor.log(container), secrets))
        except NotFound:  # the container never started (refused, cancelled while waiting): no log
            log.debug("no log of %s on the executor", container)
            return False
        except (MaoError, OSError, TimeoutError) as exc:
            log.warning("the log of %s was not kept: %s", container, getattr(exc, "message", exc))
            return False
        # Off the attempt's path: the executor also drops an unfetched log after an hour.
        self._background(self._drop(container))
        return True

    async def _drop(self, container: str) -> None:
        with contextlib.suppress(MaoError):
            await self.executor.drop_log(container)

    def keep_later(self, run_id: str, container: str, secrets: Mapping[str, str] | None) -> None:
        """``keep`` in the background, off the attempt's path (a fetch and a gzip file per attempt
        were a measurable share of a step's overhead); ``stored`` waits for it, so a reader never
        misses a log that is being kept."""
        task = self._background(self.keep(run_id, container, dict(secrets or {})))
        self._keeping[container] = task
        task.add_done_callback(lambda _: self._keeping.pop(container, None))

    async def close(self) -> None:
        """Let the keeps under way finish (each is bounded by ``KEEP_TIMEOUT``): a log the executor
        still holds is kept before the orchestrator stops."""
        await asyncio.gather(*self._keeping.values(), return_exceptions=True)

    def _background(self, work: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        # Its failure is logged with its traceback (``tasks.spawn``): no task dies unretrieved.
        return spawn(work, "keep a step log", self._later)

    async def _store(self, run_id: str, container: str, chunks: AsyncIterator[bytes]) -> None:
        target = self.path(run_id, container)
        part = target.with_name(target.name + ".part")
        handle = await asyncio.to_thread(_open_private, part)
        try:
            batch = bytearray()
            async for chunk in chunks:
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
        """The kept log, decompressed in chunks; None when there is none."""
        if (keeping := self._keeping.get(container)) is not None:
            await asyncio.wait([keeping])  # its keep is under way: wait for it, not for its result
        path = self.path(run_id, container)
        try:
            handle = await asyncio.to_thread(gzip.GzipFile, path, "rb")
        except FileNotFoundError:
            return None
        return _read_all(handle)

    def live(
        self, container: str, secrets: Mapping[str, str] | None, follow: bool
    ) -> AsyncIterator[bytes]:
        """The running container's log from the executor, masked; NotFound when it has none yet."""
        return masked(self.executor.log(container, follow=follow), secrets)

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
