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
- the folder's regular files may not add up to more than MAO_STEP_MAX_OUTPUT bytes.

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

log = logging.getLogger(__name__)

_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_MAX_NAMED = 10


class OutputRefused(BadRequest):
    """The work folder holds something that must not be committed; nothing was."""

    code = "output_refused"


@dataclass
class Inspection:
    """What one pass over a folder found and did (paths relative to the folder)."""

    total_bytes: int = 0
    cleared_bits: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # FIFOs, sockets (and devices / bad links on reset)
    devices: list[str] = field(default_factory=list)
    outside_links: list[str] = field(default_factory=list)


def _named(paths: list[str]) -> str:
    shown = ", ".join(paths[:_MAX_NAMED])
    return shown + (f" and {len(paths) - _MAX_NAMED} more" if len(paths) > _MAX_NAMED else "")


def points_outside(link: Path, root: Path) -> bool:
    """Whether the symlink ``link`` (below ``root``) resolves, or would resolve, outside ``root``.

    Absolute targets always count as outside: inside the container they name container paths, and on
    the host the orchestrator would follow them to the host's files. Relative targets are resolved as
    the kernel would (through other links too), so ``d -> .`` plus ``x -> d/../..`` is caught.
    """
    target = os.readlink(link)
    if os.path.isabs(target):
        return True
    real_root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(os.path.dirname(link), target))
    lexical = os.path.normpath(os.path.join(os.path.dirname(link), target))
    inside = (resolved == real_root or resolved.startswith(real_root + os.sep)) and (
        lexical == str(root) or lexical.startswith(str(root) + os.sep)
    )
    return not inside


def inspect_folder(
    folder: Path, owner: tuple[int, int] | None = None, *, remove_bad: bool = False
) -> Inspection:
    """Walk ``folder`` (never following links): clear special bits, remove FIFOs and sockets, make every
    entry readable and writable by its owner, re-own it to ``owner`` when given, and report devices and
    outside links (removed too when ``remove_bad``: a folder about to be reset keeps nothing of them)."""
    result = Inspection()
    root = str(folder)
    _fix(root, os.lstat(root), owner, result, root, remove_bad=remove_bad)
    # Entries are fixed (made u+rwx) while their parent is listed, before os.walk descends into them;
    # an error is raised, never skipped, so nothing unreadable escapes the inspection. os.walk lists a
    # symlink to a directory among dirnames but does not descend into it.
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            _fix(path, info, owner, result, root, remove_bad=remove_bad)
        # A link to a folder that was just removed (a link out, on reset) is not walked into: os.walk
        # would take the missing path for a folder and fail on it.
        dirnames[:] = [name for name in dirnames if os.path.lexists(os.path.join(dirpath, name))]
    for kind, paths in (("removed", result.removed), ("cleared setuid/setgid bits of", result.cleared_bits)):
        if paths:
            log.warning("work folder %s: %s %s", folder, kind, _named(paths))
    return result


def _raise(error: OSError) -> None:
    raise error


def _relative(path: str, root: str) -> str:
    return "." if path == root else os.path.relpath(path, root)


def _fix(
    path: str,
    info: os.stat_result,
    owner: tuple[int, int] | None,
    result: Inspection,
    root: str,
    *,
    remove_bad: bool = False,
) -> None:
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        if points_outside(Path(path), Path(root)):
            if remove_bad:
                os.unlink(path)
                result.removed.append(_relative(path, root))
                return
            result.outside_links.append(_relative(path, root))
        if owner is not None and (info.st_uid, info.st_gid) != owner:
            os.lchown(path, *owner)
        return
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        os.unlink(path)
        result.removed.append(_relative(path, root))
        return
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        if remove_bad:
            os.unlink(path)
            result.removed.append(_relative(path, root))
        else:
            result.devices.append(_relative(path, root))
        return
    if owner is not None and (info.st_uid, info.st_gid) != owner:
        os.lchown(path, *owner)  # chown clears setuid/setgid itself; the chmod below makes sure
    wanted = (mode & 0o7777 & ~_SPECIAL_BITS) | (0o700 if stat.S_ISDIR(mode) else 0o600)
    if mode & _SPECIAL_BITS:
        result.cleared_bits.append(_relative(path, root))
    if stat.S_ISREG(mode):
        result.total_bytes += info.st_size
    if wanted != mode & 0o7777:
        os.chmod(path, wanted, follow_symlinks=False)


def check_output(inspection: Inspection, max_bytes: int | None, what: str) -> None:
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
    if problems:
        raise OutputRefused(f"{what}: " + "; ".join(problems) + "; nothing was committed")


def hand_over(folder: Path, owner: tuple[int, int]) -> None:
    """Make ``owner`` own ``folder`` and everything in it (links themselves, never their targets)."""
    uid, gid = owner
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
        os.lchown(dirpath, uid, gid)
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, gid)


def reclaim_owner(tool_owner: tuple[int, int] | None) -> tuple[int, int] | None:
    """Our own ids when tools run as someone else (their files become ours again), else None."""
    own = (os.getuid(), os.getgid())
    return own if tool_owner is not None and tool_owner != own else None


def give_to_tool(folder: Path, tool_owner: tuple[int, int] | None) -> None:
    """Hand ``folder`` to the tool's uid before a container uses it (nothing to do when we are it)."""
    if tool_owner is not None and reclaim_owner(tool_owner) is not None:
        hand_over(folder, tool_owner)


def take_back(folder: Path, tool_owner: tuple[int, int] | None) -> Inspection:
    """After the container: ``folder`` is ours again, without special bits, FIFOs or sockets."""
    return inspect_folder(folder, reclaim_owner(tool_owner))
