"""Upkeep of this instance's local repositories: stale lock files at start, ``git gc`` on a schedule.

Both block (file system, git) and run in worker threads, each repository under its dataset's lock
(see ``Datasets``), so neither ever runs while a step's git work on that dataset does.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import git

from ._git import hardened_env, run_git
from .trees import Entry, remove_tree, walk

log = logging.getLogger(__name__)

_LOOSE_OBJECT_DIR = re.compile(r"^[0-9a-f]{2}$")


def local_repositories(data_dir: Path) -> list[tuple[str, Path]]:
    """(lock key, git dir) of every local repository: dataset clones and the bare masters of repos/.

    The lock keys are those ``Datasets`` uses: the dataset's name, and ``repos/<name>`` for masters."""
    found: list[tuple[str, Path]] = []
    for folder, prefix in (("datasets", ""), ("repos", "repos/")):
        root = Path(data_dir) / folder
        if not root.is_dir():
            continue
        for path in sorted(root.glob("*.git")):
            if (path / "HEAD").is_file():
                found.append((prefix + path.name.removesuffix(".git"), path))
    return found


def clear_stale_locks(git_dir: Path) -> list[Path]:
    """Remove every ``*.lock`` file below ``git_dir`` (index, refs, packed-refs, config, HEAD ...).

    Only at start, before this instance runs any git: the instance name is held (a second process of
    this instance refuses to start), so a lock file here can only be left by a git process that was
    killed with the previous orchestrator process, and would fail every later command that needs it."""
    removed: list[Path] = []

    def descend(entry: Entry) -> bool:
        # Loose objects never carry locks; their 256 folders are skipped.
        return not (
            entry.path.startswith("objects/") and entry.depth == 2 and _LOOSE_OBJECT_DIR.fullmatch(entry.name)
        )

    # Iterative: ref names come from masters other members push to, and may nest a thousand deep.
    for entry in walk(git_dir, descend=descend):
        if entry.name.endswith(".lock") and not entry.is_dir:
            try:
                os.unlink(entry.name, dir_fd=entry.dir_fd)
            except FileNotFoundError:
                continue
            removed.append(Path(git_dir, entry.path))
    _say_removed(removed, "stale git lock file(s) left by a killed git process")
    return removed


def remove_stale_lanes(data_dir: Path) -> list[Path]:
    """Remove the runs' own folders (``work/<dataset>/.lanes/<run>``, overlap ``allow``) and their
    indexes that a killed process left. Only at start: no run outlives its process, so none is in use."""
    removed: list[Path] = []
    for lanes in sorted(Path(data_dir).glob("work/*/.lanes")):
        for lane in sorted(lanes.iterdir()):
            remove_tree(lane)  # whatever a tool left there, however deep
            removed.append(lane)
    for index in sorted(Path(data_dir).glob("datasets/*.git/mao-index/.lane-*")):
        index.unlink(missing_ok=True)
    if removed:
        log.warning("removed %d run folder(s) left by a killed process: %s", len(removed), removed[:10])
    return removed


def remove_scratch(data_dir: Path) -> list[Path]:
    """Remove what interrupted runs left in the temporary folders: the runs' scratch folders
    (``tmp/<run>``: input snapshots and fan-out shards), the file batches of ``files.commit_files``
    (``datasets/*.git/mao-tmp``), throw-away indexes (``mao-index/.snapshot-*``, ``.files-*``) and
    half-kept step logs (``logs/<run>/*.part``).
    Only at start: none is in use before the first run. Never raises (a warning names what stays)."""
    data_dir = Path(data_dir)
    removed: list[Path] = []
    scratch_roots = [data_dir / "tmp", *sorted(data_dir.glob("datasets/*.git/mao-tmp"))]
    for root in scratch_roots:
        try:
            leftovers = sorted(root.iterdir()) if root.is_dir() else []
        except OSError as exc:
            log.warning("could not list %s: %s", root, exc)
            continue
        for path in leftovers:
            if remove_tree(path):
                removed.append(path)
    for pattern in (
        "datasets/*.git/mao-index/.snapshot-*",
        "datasets/*.git/mao-index/.files-*",
        "logs/*/*.log.gz.part",  # a step log a killed process was keeping (runs/step_logs.py)
    ):
        for index in sorted(data_dir.glob(pattern)):
            try:
                index.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove %s: %s", index, exc)
                continue
            removed.append(index)
    _say_removed(removed, "temporary folder(s) and file(s) of interrupted runs")
    return removed


def collect_garbage(git_dir: Path, timeout: float = 3600) -> None:
    """``git gc --auto`` (packs loose objects, prunes what git considers safe to prune)."""
    run_git(
        git.Git(str(git_dir)),
        ["gc", "--auto", "--quiet"],
        env=hardened_env({"GIT_DIR": str(git_dir)}),
        what=f"collect garbage in {git_dir}",
        timeout=timeout,
    )


def _say_removed(removed: list[Path], what: str) -> None:
    """One warning naming what a clean-up removed (the first ten), none when it removed nothing."""
    if removed:
        log.warning("removed %d %s: %s", len(removed), what, ", ".join(str(p) for p in removed[:10]))
