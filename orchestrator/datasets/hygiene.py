"""Work-folder hygiene: what a tool leaves in its folder before git sees it, and who owns the folder.

A tool writes its output folder as an unprivileged uid (``Settings.tool_user``); the orchestrator, which
may be root, then reads and commits it. In between, this module makes sure nothing the tool left can
act on the host or on the orchestrator:

- setuid, setgid and sticky bits are cleared (a setuid binary in a persistent folder on the host would
  be a way back to the tool's uid, or to root if it ever ran as root);
- FIFOs and sockets are removed (git cannot store them and reading one would block), with a warning;
- a device node is refused: the step fails naming it (tools run without CAP_MKNOD, so one appearing
  means something got around that);
- a symlink that points outside the folder is refused: the step fails naming it and nothing is
  committed (the orchestrator would otherwise follow it on the host, e.g. reading insights.json);
- the folder's regular files may not add up to more than MAO_STEP_MAX_OUTPUT bytes, nor its entries
  number more than MAO_STEP_MAX_FILES; no path may be deeper or longer than ``trees``' documented
  limits (the walk stops at the first one, naming it: a tree a thousand folders deep is refused, not
  a crash).

Everything blocks on the file system: callers run it in a worker thread (the dataset layer does).
Nothing here follows a symlink: ownership and modes are changed with lchown / on non-links only.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import BadRequest

from .trees import Entry, TreeLimits, TreeTooLarge, walk

log = logging.getLogger(__name__)

_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_MAX_NAMED = 10


class OutputRefused(BadRequest):
    """The work folder holds something that must not be committed; nothing was. ``path``: the
    first path past the tree's limits, when that is the reason."""

    code = "output_refused"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class Inspection:
    """What one pass over a folder found and did (paths relative to the folder)."""

    total_bytes: int = 0
    entries: int = 0  # below the folder: files, folders, links and the rest
    empty_folders: int = 0  # folders with nothing in them (git keeps none: a reset removes them)
    cleared_bits: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # FIFOs, sockets (and devices / bad links on reset)
    devices: list[str] = field(default_factory=list)
    outside_links: list[str] = field(default_factory=list)


def _named(paths: list[str]) -> str:
    shown = ", ".join(paths[:_MAX_NAMED])
    return shown + (f" and {len(paths) - _MAX_NAMED} more" if len(paths) > _MAX_NAMED else "")


# How many symlinks a path may pass through before it counts as a loop (the kernel's own bound).
MAX_LINK_HOPS = 40


def points_outside(link: Path, root: Path) -> bool:
    """Whether the symlink ``link`` (below ``root``) resolves, or would resolve, outside ``root``.

    Absolute targets always count as outside: inside the container they name container paths, and on
    the host the orchestrator would follow them to the host's files. Relative targets are resolved as
    the kernel would (through other links too), so ``d -> .`` plus ``x -> d/../..`` is caught, and
    lexically too (``..`` taken as text, as a reader of the path may). Resolution is iterative and
    passes ``MAX_LINK_HOPS`` links at most: a longer chain, or a path the file system cannot even
    look up, counts as outside (refused rather than guessed)."""
    target = os.readlink(link)
    if os.path.isabs(target):
        return True
    here = os.path.relpath(os.path.dirname(link), root)
    start = [] if here == "." else here.split(os.sep)
    lexical = os.path.normpath(os.path.join(here, target))
    if lexical == ".." or lexical.startswith(".." + os.sep):
        return True
    return not _resolves_inside(str(root), start, target)


def _resolves_inside(root: str, start: list[str], target: str) -> bool:
    """Follow ``target`` from the folder ``start`` (components below ``root``) as the kernel would,
    without recursion; False as soon as it leaves ``root``."""
    current = list(start)
    pending = [part for part in reversed(target.split("/"))]
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                return False
            current.pop()
            continue
        candidate = os.path.join(root, *current, part)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            current.append(part)  # dangling from here on: the rest resolves lexically
            continue
        except OSError:
            return False  # too long, a file on the way: nothing a reader could rely on
        if not stat.S_ISLNK(info.st_mode):
            current.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return False
        inner = os.readlink(candidate)
        if os.path.isabs(inner):
            return False
        pending.extend(reversed(inner.split("/")))
    return True


def inspect_folder(
    folder: Path,
    owner: tuple[int, int] | None = None,
    *,
    remove_bad: bool = False,
    limits: TreeLimits | None = None,
    what: str | None = None,
) -> Inspection:
    """Walk ``folder`` (never following links): clear special bits, remove FIFOs and sockets, make every
    entry readable and writable by its owner, re-own it to ``owner`` when given, and report devices and
    outside links (removed too when ``remove_bad``: a folder about to be reset keeps nothing of them).
    ``limits`` (default: the documented depth and path bounds, any number of entries): OutputRefused
    naming the first path past them (``what`` says whose folder), the folder only partly inspected."""
    result = Inspection()
    root = str(folder)
    root_info = os.lstat(root)
    _fix_root(root, root_info, owner, result)
    # Entries are fixed (made u+rwx) when the walk yields them, before it enters them; an error is
    # raised, never skipped, so nothing unreadable escapes the inspection.
    links: list[str] = []
    # The walk is pre-order: a folder's entries follow it at once, so a folder followed by anything
    # not below it (or by nothing) is empty.
    last_folder: str | None = None
    try:
        for entry in walk(root, limits or TreeLimits()):
            result.entries += 1
            if last_folder is not None and not entry.path.startswith(last_folder):
                result.empty_folders += 1
            last_folder = entry.path + "/" if entry.is_dir else None
            _fix(entry, owner, result, links, remove_bad=remove_bad)
    except TreeTooLarge as exc:
        raise OutputRefused(f"{what or folder}: {exc}", path=exc.path) from exc
    result.empty_folders += last_folder is not None
    _judge_links(folder, links, result, remove_bad=remove_bad)
    for kind, paths in (("removed", result.removed), ("cleared setuid/setgid bits of", result.cleared_bits)):
        if paths:
            log.warning("work folder %s: %s %s", folder, kind, _named(paths))
    return result


def _fix_root(root: str, info: os.stat_result, owner: tuple[int, int] | None, result: Inspection) -> None:
    if owner is not None and (info.st_uid, info.st_gid) != owner:
        os.lchown(root, *owner)
    mode = info.st_mode
    wanted = (mode & 0o7777 & ~_SPECIAL_BITS) | 0o700
    if mode & _SPECIAL_BITS:
        result.cleared_bits.append(".")
    if wanted != mode & 0o7777:
        os.chmod(root, wanted, follow_symlinks=False)


def _judge_links(folder: Path, links: list[str], result: Inspection, *, remove_bad: bool) -> None:
    """Judge every link against the tree as the walk left it, and only then remove the ones that point
    outside (``remove_bad``). Removing a link while others are still to be judged would change their
    verdict: ``b/a -> ../a`` with ``a -> ..`` leads outside, but dangles (so stays inside) once ``a`` is
    gone, and the next tool could put a link back at ``a``. FIFOs, sockets and devices removed during
    the walk change no verdict: passing through a missing name resolves as passing through a file."""
    outside = [rel for rel in links if points_outside(folder / rel, folder)]
    if not remove_bad:
        result.outside_links.extend(outside)
        return
    for rel in outside:
        # The walk never follows links, so every folder on the way is a real folder.
        os.unlink(folder / rel)
        result.removed.append(rel)


def _fix(
    entry: Entry,
    owner: tuple[int, int] | None,
    result: Inspection,
    links: list[str],
    *,
    remove_bad: bool = False,
) -> None:
    """Fix one entry where the walk met it; a link is only noted (``links``): it is judged after the
    walk, against the whole tree."""
    info, name, fd = entry.info, entry.name, entry.dir_fd
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        links.append(entry.path)
        if owner is not None and (info.st_uid, info.st_gid) != owner:
            os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
        return
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        os.unlink(name, dir_fd=fd)
        result.removed.append(entry.path)
        return
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        if remove_bad:
            os.unlink(name, dir_fd=fd)
            result.removed.append(entry.path)
        else:
            result.devices.append(entry.path)
        return
    if owner is not None and (info.st_uid, info.st_gid) != owner:
        # chown clears setuid/setgid itself; the chmod below makes sure
        os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
    wanted = (mode & 0o7777 & ~_SPECIAL_BITS) | (0o700 if stat.S_ISDIR(mode) else 0o600)
    if mode & _SPECIAL_BITS:
        result.cleared_bits.append(entry.path)
    if stat.S_ISREG(mode):
        result.total_bytes += info.st_size
    if wanted != mode & 0o7777:
        os.chmod(name, wanted, dir_fd=fd, follow_symlinks=False)


def check_output(
    inspection: Inspection, max_bytes: int | None, what: str, max_files: int | None = None
) -> None:
    """Raise OutputRefused when the inspected folder may not be committed."""
    problems = []
    if inspection.outside_links:
        problems.append(
            "symlinks pointing outside the output folder are not allowed: " + _named(inspection.outside_links)
        )
    if inspection.devices:
        problems.append("device nodes are not allowed: " + _named(inspection.devices))
    if max_bytes is not None and inspection.total_bytes > max_bytes:
        problems.append(
            f"the output holds {inspection.total_bytes} bytes, more than MAO_STEP_MAX_OUTPUT={max_bytes}"
        )
    if max_files is not None and inspection.entries > max_files:
        problems.append(
            f"the output holds {inspection.entries} entries, more than MAO_STEP_MAX_FILES={max_files}"
        )
    if problems:
        raise OutputRefused(f"{what}: " + "; ".join(problems) + "; nothing was committed")


def hand_over(folder: Path, owner: tuple[int, int]) -> None:
    """Make ``owner`` own ``folder`` and everything in it (links themselves, never their targets)."""
    uid, gid = owner
    os.lchown(folder, uid, gid)
    for entry in walk(folder):
        os.chown(entry.name, uid, gid, dir_fd=entry.dir_fd, follow_symlinks=False)


def reclaim_owner(tool_owner: tuple[int, int] | None) -> tuple[int, int] | None:
    """Our own ids when tools run as someone else (their files become ours again), else None."""
    own = (os.getuid(), os.getgid())
    return own if tool_owner is not None and tool_owner != own else None


def give_to_tool(folder: Path, tool_owner: tuple[int, int] | None) -> None:
    """Hand ``folder`` to the tool's uid before a container uses it (nothing to do when we are it)."""
    if tool_owner is not None and reclaim_owner(tool_owner) is not None:
        hand_over(folder, tool_owner)


def take_back(
    folder: Path, tool_owner: tuple[int, int] | None, limits: TreeLimits | None = None
) -> Inspection:
    """After the container: ``folder`` is ours again, without special bits, FIFOs or sockets."""
    return inspect_folder(folder, reclaim_owner(tool_owner), limits=limits)
