"""The files side of fan-out: which input files a step's shards get, and how their outputs combine.

Everything here is synchronous and touches the file system: the engine calls it through
``asyncio.to_thread`` so the event loop never waits on a large folder.

- ``list_files(root, glob)``: the input snapshot's files matching the glob, as relative POSIX paths in
  byte order (the same snapshot always gives the same shards). Regular files and symlinks count as
  files; symlinks are never followed, so a link to a folder is one file, not a way out of the snapshot.
- ``split(files, split_size)``: consecutive runs of ``split_size`` files, numbered from 1.
- ``materialise(root, shard, dest)``: a folder holding only the shard's files, hard-linked from the
  snapshot (copied when a link is not possible), so 200 shards cost no extra disk.
- ``combine(outputs, dest)``: moves the shards' output folders into the node branch's work folder.
  Shards add or replace files; they cannot delete what the branch already holds (each one saw an empty
  ``/usr/src/app/data``, so "absent" means "not mine", not "delete it"). Two shards writing the same
  path, or one writing a file where another writes a folder, raise ``ShardCollision`` naming the paths,
  before anything is moved. Symlinks are moved as links (never followed), and a symlink already in the
  work folder is replaced rather than written through, so a shard cannot write outside the folder.
  Special files (FIFOs, sockets, devices) and ``.git`` entries, which git cannot or must not store,
  are left out and listed in ``Combined.skipped``.

A glob with no match gives no shards: the engine then runs no container and the step succeeds with
the node branch unchanged (``shards.count`` 0), as a pipeline over a folder that is still empty should.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from ...datasets.trees import Entry, TreeLimits, remove_tree, walk
from ...domain.fanout import glob_problem

MAX_NAMED_PATHS = 20  # in an error message; the rest are counted


@dataclass(frozen=True)
class Shard:
    """One slice of a fan-out step's input: ``index`` is 1-based (``MAO_SHARD``), ``count`` is
    ``MAO_SHARD_COUNT``, ``files`` are relative POSIX paths inside the input snapshot."""

    index: int
    count: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class Combined:
    """What ``combine`` moved: the number of files and links, and the entries it left out."""

    files: int
    skipped: tuple[str, ...]


class ShardCollision(Exception):
    """Two shards wrote the same path. ``paths`` maps each path to the shards (1-based) writing it."""

    def __init__(self, paths: dict[str, tuple[int, ...]]) -> None:
        self.paths = dict(sorted(paths.items()))
        named = [
            f"{path} (shards {', '.join(str(s) for s in shards)})"
            for path, shards in list(self.paths.items())[:MAX_NAMED_PATHS]
        ]
        more = len(self.paths) - len(named)
        message = "shards wrote the same path: " + "; ".join(named)
        if more:
            message += f"; and {more} more"
        super().__init__(message)
        self.message = message


# -- globs -------------------------------------------------------------------------------------------


def glob_matches(pattern: str, path: str) -> bool:
    """True when the relative POSIX ``path`` matches ``pattern`` (see ``domain.fanout.glob_problem``)."""
    return _match(tuple(pattern.split("/")), tuple(path.split("/")))


def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        # Zero or more whole segments; collapse repeated ** so the search stays linear per segment.
        while rest and rest[0] == "**":
            rest = rest[1:]
        return any(_match(rest, parts[skip:]) for skip in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _match(rest, parts[1:])


# -- listing and splitting -----------------------------------------------------------------------


def _walk(root: Path, limits: TreeLimits | None) -> Iterator[Entry]:
    """Every entry below ``root``, never following a symlink and never descending into a ``.git``
    folder (git cannot store one; a snapshot never holds one). Iterative and bounded by ``limits``
    (``trees.TreeTooLarge`` naming the first path past them)."""
    return walk(root, limits, descend=lambda entry: entry.name.lower() != ".git")


def list_files(root: Path, pattern: str, limits: TreeLimits | None = None) -> list[str]:
    """The regular files and symlinks under ``root`` matching ``pattern``, sorted by path."""
    if problem := glob_problem(pattern):
        raise ValueError(problem)
    matched = [
        entry.path
        for entry in _walk(root, limits)
        if (entry.is_link or entry.is_file) and glob_matches(pattern, entry.path)
    ]
    # Sorted as a whole (the walk sorts per folder, which puts "a/b" after "a.txt" but "a-b" before).
    return sorted(matched)


def split(files: Sequence[str], split_size: int) -> list[Shard]:
    """Consecutive runs of ``split_size`` files; the last shard may be smaller. No files, no shards."""
    if split_size < 1:
        raise ValueError("split_size must be at least 1")
    chunks = [tuple(files[start : start + split_size]) for start in range(0, len(files), split_size)]
    return [Shard(index=n, count=len(chunks), files=chunk) for n, chunk in enumerate(chunks, start=1)]


def materialise(root: Path, shard: Shard, dest: Path) -> Path:
    """Fill the new folder ``dest`` with the shard's files from ``root`` (hard links, else copies);
    symlinks are recreated as links with the same target. Returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=False)
    for relative in shard.files:
        source = root / relative
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
            continue
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError:
            # Another file system, or one without hard links: a copy is slower but equivalent.
            shutil.copy2(source, target, follow_symlinks=False)
    return dest


# -- combining outputs -------------------------------------------------------------------------------


@dataclass
class _Scan:
    leaves: dict[str, int]  # relative path of a file or link -> shard
    folders: dict[str, set[int]]  # relative folder holding leaves -> shards
    skipped: list[str]


def _scan(
    outputs: Sequence[tuple[int, Path]], limits: TreeLimits | None
) -> tuple[_Scan, dict[str, tuple[int, ...]]]:
    scan = _Scan(leaves={}, folders={}, skipped=[])
    collisions: dict[str, set[int]] = {}
    for shard, folder in outputs:
        for entry in _walk(folder, limits):
            relative = entry.path
            if entry.name.lower() == ".git":
                scan.skipped.append(f"{relative} (shard {shard}: git metadata)")
                continue
            if entry.is_dir:
                continue
            if not (entry.is_link or entry.is_file):
                scan.skipped.append(f"{relative} (shard {shard}: {_kind(entry.info)})")
                continue
            owner = scan.leaves.get(relative)
            if owner is not None:
                collisions.setdefault(relative, {owner}).add(shard)
                continue
            scan.leaves[relative] = shard
            parts = relative.split("/")
            for depth in range(1, len(parts)):
                scan.folders.setdefault("/".join(parts[:depth]), set()).add(shard)
    # A file in one shard where another shard has a folder: neither can win without losing the other.
    for relative, owner in scan.leaves.items():
        others = scan.folders.get(relative, set()) - {owner}
        if others:
            collisions.setdefault(relative, {owner}).update(others)
    return scan, {path: tuple(sorted(shards)) for path, shards in collisions.items()}


def _kind(info: os.stat_result) -> str:
    mode = info.st_mode
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or special file"


def _clear(target: Path) -> None:
    """Remove whatever is at ``target`` (a folder as a whole; a link itself, not what it points to)."""
    if target.is_dir() and not target.is_symlink():
        if not remove_tree(target):
            raise OSError(f"could not remove {target} to make room for a shard's file")
    elif os.path.lexists(target):
        target.unlink()


def _ensure_folder(dest: Path, relative_folder: str) -> Path:
    """``dest/relative_folder`` as real folders: a link or a file on the way is replaced, so writing
    below it can never land outside ``dest``."""
    current = dest
    for part in relative_folder.split("/") if relative_folder else []:
        current = current / part
        if current.is_symlink() or (os.path.lexists(current) and not current.is_dir()):
            current.unlink()
        if not os.path.lexists(current):
            current.mkdir()
    return current


def _move(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target, follow_symlinks=False)


def combine(outputs: Sequence[tuple[int, Path]], dest: Path, limits: TreeLimits | None = None) -> Combined:
    """Move every shard's output (``(shard index, folder)``) into ``dest`` (see the module docstring).

    Raises ``ShardCollision`` before touching ``dest`` when two shards wrote the same path, and
    ``trees.TreeTooLarge`` when a shard's output is past ``limits`` (each shard's walk is bounded on
    its own; the work folder as a whole is checked again when it is committed). The shard folders
    are consumed (their entries moved out)."""
    if dest.is_symlink() or not dest.is_dir():
        raise ValueError(f"{dest} must be a folder")
    scan, collisions = _scan(outputs, limits)
    if collisions:
        raise ShardCollision(collisions)
    folders = dict(outputs)
    for relative, shard in sorted(scan.leaves.items()):
        parent, _, name = relative.rpartition("/")
        target = _ensure_folder(dest, parent) / name
        _clear(target)
        _move(folders[shard] / relative, target)
    return Combined(files=len(scan.leaves), skipped=tuple(scan.skipped))
