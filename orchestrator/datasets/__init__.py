"""Dataset repositories: git repositories that hold pipeline output, with an async facade.

The synchronous core is :mod:`orchestrator.datasets.repo`; git blocks, so the orchestrator reaches it only
through :class:`Datasets`, which runs every call in a worker thread and serializes calls on one dataset.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..domain.masters import check_master
from ..errors import GitError
from ._git import redact
from .bare import RepoSettings
from .branches import MergeResult
from .local import GROUND_TRUTH, init_bare
from .masters import resolve_master
from .repo import DatasetRepo
from .trees import remove_tree
from .upkeep import (
    clear_stale_locks,
    collect_garbage,
    local_repositories,
    remove_scratch,
    remove_stale_lanes,
)

__all__ = [
    "GROUND_TRUTH",
    "DatasetRepo",
    "Datasets",
    "MergeResult",
    "RepoSettings",
    "check_master",
    "init_bare",
    "redact",
]

T = TypeVar("T")
log = logging.getLogger(__name__)


class Datasets:
    """Async access to dataset repositories. Every git call runs in a worker thread (asyncio.to_thread);
    calls on the same dataset are serialized by one asyncio.Lock per dataset name so fetches/pushes/ref
    updates never race locally."""

    def __init__(
        self,
        data_dir: Path,
        *,
        git_name: str,
        git_email: str,
        network_timeout: float = 120,
        tool_owner: tuple[int, int] | None = None,
        max_output: int | None = None,
        max_files: int | None = None,
        master_roots: Sequence[Path] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.settings = RepoSettings(git_name, git_email, network_timeout, tool_owner, max_output, max_files)
        self.tool_owner = tool_owner  # the runs' fan-out shards hand their folders to the same user
        # None: any local master (unit tests); otherwise local masters only under these folders.
        self.master_roots = None if master_roots is None else tuple(master_roots)
        self._locks: dict[str, asyncio.Lock] = {}
        self._repos: dict[str, DatasetRepo] = {}

    def _lock(self, key: str) -> asyncio.Lock:
        # Created on first use, inside the running loop; never removed (one small object per dataset).
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def repo(self, name: str, master: str) -> DatasetRepo:
        """The DatasetRepo of ``name`` (validated); a new one when the dataset's master changed. A local
        master outside the allowed roots is refused here too (BadRequest): another federation member
        may have written the registration straight into etcd."""
        if self.master_roots is not None:
            master = resolve_master(master, self.master_roots)
        current = self._repos.get(name)
        if current is None or current.master != master:
            current = DatasetRepo(self.data_dir, name, master, self.settings)
            self._repos[name] = current
        return current

    async def run(self, name: str, master: str, fn: Callable[[DatasetRepo], T]) -> T:
        """Run ``fn(repo)`` in a worker thread while holding the dataset's lock."""
        repo = self.repo(name, master)
        async with self._lock(name):
            return await _in_thread(fn, repo)

    async def init_bare(self, name: str) -> tuple[Path, bool]:
        """Create ``<data_dir>/repos/<name>.git`` if missing; returns (path, created)."""
        # '/' cannot occur in a name, so this key never collides with a dataset's.
        async with self._lock(f"repos/{name}"):
            return await _in_thread(init_bare, self.data_dir, name)

    # Conveniences for the usual sequences; each is one locked thread hop.

    async def sync(self, name: str, master: str) -> str:
        """Fetch the dataset and make sure ground-truth exists; returns its tip."""

        def work(repo: DatasetRepo) -> str:
            repo.sync()
            return repo.ensure_ground_truth()

        return await self.run(name, master, work)

    async def has_local(self, name: str) -> bool:
        """Whether this instance already has a local repository for dataset ``name``."""
        path = self.data_dir / "datasets" / f"{name}.git"
        return await asyncio.to_thread((path / "HEAD").is_file)

    async def remove_local(self, name: str) -> None:
        """Delete dataset ``name``'s local repository (e.g. one a failed init just created)."""
        path = self.data_dir / "datasets" / f"{name}.git"
        async with self._lock(name):
            repo = self._repos.pop(name, None)
            if repo is not None:
                repo.close()
            await _in_thread(remove_tree, path)

    # -- upkeep (upkeep.py) ------------------------------------------------------------------------

    async def clear_stale_locks(self) -> int:
        """Remove lock files a killed git left in this instance's repositories; call once at start."""
        removed = 0
        for key, path in await asyncio.to_thread(local_repositories, self.data_dir):
            async with self._lock(key):
                removed += len(await _in_thread(clear_stale_locks, path))
        # Also the runs' own folders (overlap allow) and temporary folders (snapshots, shards, file
        # batches) a killed process left: no run outlives it.
        await asyncio.to_thread(remove_stale_lanes, self.data_dir)
        await asyncio.to_thread(remove_scratch, self.data_dir)
        return removed

    async def collect_garbage(self) -> None:
        """One ``git gc --auto`` pass over every local repository, each under its dataset's lock."""
        for key, path in await asyncio.to_thread(local_repositories, self.data_dir):
            async with self._lock(key):
                # The list was taken before the lock: the dataset may have been removed since.
                if not await asyncio.to_thread((path / "HEAD").is_file):
                    continue
                try:
                    await _in_thread(collect_garbage, path)
                except GitError as exc:
                    log.warning("git gc of %s failed, next pass retries: %s", path, exc.message)

    def close(self) -> None:
        for repo in self._repos.values():
            repo.close()
        self._repos.clear()


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    """asyncio.to_thread that, when cancelled, still waits for the thread to finish before re-raising.

    A thread cannot be interrupted: releasing the dataset lock while git still runs would let the next
    operation race it, which is exactly what the lock is there to prevent.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    future = loop.run_in_executor(None, functools.partial(ctx.run, fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        if not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log "exception never retrieved"
        raise
