"""Walking and removing file trees that someone else wrote: iteratively, without following links,
within documented limits (docs/security.md#tools).

A tool's output folder, an input snapshot checked out of another member's ground-truth, a fan-out
shard's folder: their shape is chosen by whoever wrote them. A recursive walk (``os.walk`` and
``shutil.rmtree`` in Python 3.11, a hand-written recursion) dies of ``RecursionError`` on a tree
about a thousand folders deep, and a path-based one of ``ENAMETOOLONG`` once the paths outgrow
``PATH_MAX``. So everything here:

- is iterative: an explicit stack of names, never a Python recursion;
- works relative to open folders (``dir_fd``), so a path's length never matters to the walk itself;
- holds two folder descriptors at most, whatever the depth: going back up opens ``..`` and checks it
  is the folder it came from (device and inode), so a moved folder stops the walk instead of
  misleading it;
- never follows a symlink (``O_NOFOLLOW``, ``lstat``).

``walk`` yields every entry (pre-order, names sorted per folder) and raises ``TreeTooLarge`` naming
the first path past a ``TreeLimits`` bound: a path deeper than ``max_depth`` folders, a path longer
than ``max_path_bytes`` (git and every path-based tool on the host need the path to fit in
``PATH_MAX`` with the folder's own prefix), or the folder whose entries take the count past
``max_entries`` (refused when it is listed, before its entries are walked). ``remove_tree`` has no
limits (a clean-up must remove whatever is there) and never raises.

Everything blocks on the file system: callers run it in a worker thread.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The documented bounds of a dataset's tree (docs/runs.md, docs/security.md#tools). Depth: folders below
# the root; real data sets are a few levels deep, and 128 leaves a wide margin. Path: bytes of a
# path relative to the root, leaving ~1 KiB of PATH_MAX (4096) for the data dir's own prefix.
MAX_DEPTH = 128
MAX_PATH_BYTES = 3072
_SHOWN = 160  # characters of a path named in a message (the middle is elided beyond)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class TreeLimits:
    """Bounds of one walk; ``max_entries`` None: no bound on the count (trees this instance wrote)."""

    max_entries: int | None = None
    max_depth: int = MAX_DEPTH
    max_path_bytes: int = MAX_PATH_BYTES


class TreeTooLarge(Exception):
    """A walk met a path past its limits. ``path`` is relative to the walk's root; ``what`` says
    which bound (one sentence, naming the setting or the documented limit)."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        super().__init__(f"{shown(path)}: {what}")


class TreeChanged(OSError):
    """A folder being walked was moved meanwhile (its ``..`` is no longer the folder it came from)."""


def shown(path: str) -> str:
    """``path`` for a message: whole up to ``_SHOWN`` characters, else its start and end."""
    if len(path) <= _SHOWN:
        return path
    half = _SHOWN // 2
    return f"{path[:half]}...{path[-half:]} ({path.count('/') + 1} levels)"


@dataclass(frozen=True)
class Entry:
    """One entry met by ``walk``. ``dir_fd`` is the open folder holding it, valid only until the
    walk resumes: act on the entry through it (``os.lstat(entry.name, dir_fd=entry.dir_fd)``)."""

    path: str  # relative to the root, '/'-separated
    name: str
    depth: int  # 1 for the root's own entries
    info: os.stat_result  # lstat, taken when the entry was met
    dir_fd: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.info.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.info.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.info.st_mode)


@dataclass
class _Level:
    prefix: str  # path of this folder relative to the root, with a trailing '/' ('' for the root)
    names: list[str]  # entries not yet visited, reversed (pop() gives the next in order)
    ident: tuple[int, int]  # (st_dev, st_ino) of this folder


def _ident(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _listing(fd: int, where: str, limits: TreeLimits | None, count: int) -> list[str]:
    """The folder's names sorted, reversed for pop(). With ``max_entries``, at most that many more
    than ``count`` are read: a folder that holds more is refused at once, naming it (``where``), so a
    folder of millions of entries costs no more memory than the limit allows."""
    budget = None if limits is None or limits.max_entries is None else limits.max_entries - count
    names: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            names.append(entry.name)
            if budget is not None and len(names) > budget:
                assert limits is not None and limits.max_entries is not None
                raise TreeTooLarge(where, _too_many(limits.max_entries))
    names.sort(reverse=True)
    return names


def _too_many(max_entries: int) -> str:
    return f"the folder holds more than MAO_STEP_MAX_FILES={max_entries} entries"


def _up(fd: int, expected: tuple[int, int], what: str) -> int:
    """The parent of the open folder ``fd``, opened through ``..`` and checked to be the folder the
    walk came from (``expected``: device, inode); ``fd`` stays open."""
    up = os.open("..", _DIR_FLAGS, dir_fd=fd)
    if _ident(os.fstat(up)) != expected:
        os.close(up)
        raise TreeChanged(f"{what} was moved while it was being walked")
    return up


def walk(
    root: Path | str,
    limits: TreeLimits | None = None,
    *,
    descend: Callable[[Entry], bool] | None = None,
) -> Iterator[Entry]:
    """Every entry below ``root`` (not ``root`` itself), parents before their contents, names in
    name order within a folder. Symlinks are yielded, never followed. A folder is entered after
    the consumer has seen it (so it may fix the folder's mode first), unless ``descend(entry)`` is
    false. Raises ``TreeTooLarge`` at the first path past ``limits`` (None: no limits at all), and
    ``OSError`` for what the file system refuses (an entry gone while walking is skipped)."""
    fd = os.open(root, _DIR_FLAGS)  # the one folder descriptor held between two steps of the walk
    try:
        count = 0
        stack = [_Level("", _listing(fd, ".", limits, count), _ident(os.fstat(fd)))]
        while stack:
            level = stack[-1]
            if not level.names:
                stack.pop()
                if stack:
                    up = _up(fd, stack[-1].ident, stack[-1].prefix or ".")
                    os.close(fd)
                    fd = up
                continue
            name = level.names.pop()
            path = level.prefix + name
            try:
                info = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                continue
            count += 1
            if limits is not None:
                _check(limits, path, len(stack), count)
            entry = Entry(path, name, len(stack), info, fd)
            yield entry
            if not stat.S_ISDIR(info.st_mode) or (descend is not None and not descend(entry)):
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue
            os.close(fd)
            fd = child
            names = _listing(fd, path, limits, count)
            stack.append(_Level(path + "/", names, _ident(os.fstat(fd))))
    finally:
        os.close(fd)


def _check(limits: TreeLimits, path: str, depth: int, count: int) -> None:
    if limits.max_entries is not None and count > limits.max_entries:
        raise TreeTooLarge(path, _too_many(limits.max_entries))
    if depth > limits.max_depth:
        raise TreeTooLarge(path, f"deeper than the {limits.max_depth} folders a dataset's path may have")
    if len(os.fsencode(path)) > limits.max_path_bytes:
        raise TreeTooLarge(path, f"longer than the {limits.max_path_bytes} bytes a dataset's path may have")


# -- removing -------------------------------------------------------------------------------------


def remove_tree(path: Path | str) -> bool:
    """Remove ``path`` and everything below it (a link itself, never its target), however deep.
    Never raises: True when ``path`` is gone, False (with a warning naming the problem) otherwise."""
    absolute = os.path.abspath(path)
    try:
        parent_fd = os.open(os.path.dirname(absolute) or "/", _DIR_FLAGS)
        try:
            remove_entry(parent_fd, os.path.basename(absolute))
        finally:
            os.close(parent_fd)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return False
    return True


def remove_contents(folder: Path | str) -> bool:
    """Empty ``folder`` (kept itself); never raises. True when it is empty afterwards."""
    try:
        fd = os.open(folder, _DIR_FLAGS)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("could not empty %s: %s", folder, exc)
        return False
    ok = True
    try:
        for name in os.listdir(fd):
            try:
                remove_entry(fd, name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove %s: %s", os.path.join(folder, name), exc)
                ok = False
    except OSError as exc:
        log.warning("could not empty %s: %s", folder, exc)
        ok = False
    finally:
        os.close(fd)
    return ok


def _owner_may_enter(fd: int, name: str, info: os.stat_result) -> None:
    """A folder the tool made unreadable (mode 000) belongs to us again, or we are root: make it
    ours to list and empty."""
    if info.st_mode & 0o700 != 0o700 and (os.geteuid() == 0 or info.st_uid == os.geteuid()):
        os.chmod(name, stat.S_IMODE(info.st_mode) | 0o700, dir_fd=fd, follow_symlinks=False)


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` in the open folder ``dir_fd``, with everything below it when it is a folder.
    Iterative, two descriptors at most; raises OSError when something cannot be removed."""
    info = os.lstat(name, dir_fd=dir_fd)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    _owner_may_enter(dir_fd, name, info)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        # One level per open folder from ``name`` down: its name in its parent, its identity, the
        # names in it not yet removed.
        stack = [(name, _ident(os.fstat(fd)), os.listdir(fd))]
        while True:
            _, _, names = stack[-1]
            while names:
                child = names.pop()
                try:
                    child_info = os.lstat(child, dir_fd=fd)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(child_info.st_mode):
                    os.unlink(child, dir_fd=fd)
                    continue
                _owner_may_enter(fd, child, child_info)
                inner = os.open(child, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
                stack.append((child, _ident(os.fstat(fd)), os.listdir(fd)))
                break
            else:
                # Everything in ``fd`` is gone: remove the folder itself from its parent.
                done, _, _ = stack.pop()
                if not stack:
                    os.close(fd)
                    fd = -1
                    os.rmdir(done, dir_fd=dir_fd)
                    return
                up = _up(fd, stack[-1][1], stack[-1][0])
                os.close(fd)
                fd = up
                os.rmdir(done, dir_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
