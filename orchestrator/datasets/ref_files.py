"""A bare repository's branches read from its files (``packed-refs`` and the loose refs), and a branch
moved by writing its loose ref: no git process.

``git for-each-ref`` costs a process (about 5 ms) and a step's path asked it three times (the work
folder's reset, the commit, the vote). The files backend is two simple formats: ``packed-refs``
(``<oid> <refname>`` lines, a ``^<oid>`` line peeling the tag above) and one file per loose ref
(``<oid>`` or ``ref: <refname>``), a loose ref overriding its packed copy. Git writes a ref by
renaming its ``.lock`` file over it, so a reader sees the old value or the new, never half of one;
and every git call on a dataset's repository runs under that dataset's lock (``Datasets.run``), so
nothing moves while this reads.

Anything else (a ref storage extension such as reftable, a file that is not one of those forms, an
object-id of an unexpected length, a symbolic ref leading outside the prefixes read) returns None:
the caller asks git instead. Otherwise what ``for-each-ref --format='%(objectname) %(refname)'``
lists: symbolic refs resolved to their target's object id, ``.lock`` files skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

_OID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_MAX_SYMREF_DEPTH = 5  # git's own bound on a chain of symbolic refs


def read_refs(git_dir: Path, prefixes: Iterable[str]) -> dict[str, str] | None:
    """{refname: object id} of every ref under ``prefixes`` (each ending in '/'), or None when the
    repository's refs are not plainly readable here (the caller then runs ``git for-each-ref``)."""
    try:
        if _other_storage(git_dir, _config(git_dir)):
            return None
        prefixes = tuple(prefixes)
        # The loose refs first, then packed-refs, as git reads them: a `pack-refs --prune` (an
        # operator's gc) between the two reads moves a ref from the first read to the second, where
        # it is found; the other order would miss it.
        loose: dict[str, str] = {}
        for prefix in prefixes:
            found = _loose(git_dir, prefix)
            if found is None:
                return None
            loose.update(found)
        values = _packed(git_dir / "packed-refs")
        if values is None:
            return None
        values.update(loose)  # a loose ref overrides its packed copy
    except OSError:
        return None
    refs: dict[str, str] = {}
    for name in values:
        if name.startswith(prefixes):
            oid = _resolve(name, values)
            if oid is None:
                return None
            refs[name] = oid
    return refs


def write_ref(git_dir: Path, ref: str, oid: str) -> bool:
    """Point the branch ``ref`` (``refs/heads/<name>``) at the commit ``oid`` as ``git update-ref``
    does: create ``<ref>.lock`` exclusively, write it, rename it over the ref (a reader, or a kill,
    sees the old value or the new). False, with nothing changed, when git must do it instead: a ref
    storage other than files, a reflog to append to, a ``.lock`` already there (a killed git's: git
    then names it), a folder in the ref's way, a write the disk refused."""
    if not ref.startswith("refs/heads/") or not _OID.fullmatch(oid):
        return False
    try:
        # No reflog to start: git runs here with core.logAllRefUpdates=false (_git._CONFIG), which
        # outranks every config file (the repository's, the operator's global and system ones).
        if _other_storage(git_dir, _config(git_dir)) or (git_dir / "logs" / ref).exists():
            return False
        path = git_dir / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError:
        return False
    try:
        try:
            os.write(fd, (oid + "\n").encode("ascii"))
        finally:
            os.close(fd)
        os.replace(lock, path)
    except OSError:
        lock.unlink(missing_ok=True)
        return False
    return True


def _config(git_dir: Path) -> str:
    try:
        return (git_dir / "config").read_text("utf-8", "replace").lower()
    except FileNotFoundError:
        return ""


def _other_storage(git_dir: Path, config: str) -> bool:
    """Whether the repository declares a ref storage other than the files (reftable)."""
    return "refstorage" in config or (git_dir / "reftable").exists()


def _packed(path: Path) -> dict[str, str] | None:
    try:
        text = path.read_text("utf-8", "surrogateescape")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("^"):
            continue
        oid, sep, name = line.partition(" ")
        if not sep or not _OID.fullmatch(oid) or not name.startswith("refs/"):
            return None
        values[name] = oid
    return values


def _loose(git_dir: Path, prefix: str) -> dict[str, str] | None:
    """The loose refs under ``prefix``: {refname: raw value (an oid, or 'ref: <name>')}."""
    values: dict[str, str] = {}
    top = git_dir / prefix
    for root, _dirs, files in os.walk(top):
        relative = os.path.relpath(root, top)
        base = prefix if relative == "." else prefix + relative.replace(os.sep, "/") + "/"
        for file in files:
            if file.endswith(".lock"):
                continue  # left by a killed git (upkeep removes it); never a ref
            try:
                value = (Path(root) / file).read_text("utf-8", "surrogateescape").strip()
            except FileNotFoundError:
                continue
            if not (_OID.fullmatch(value) or value.startswith("ref: ")):
                return None
            values[base + file] = value
    return values


def _resolve(name: str, values: dict[str, str]) -> str | None:
    """The object id ``name`` leads to; None when it leads outside what was read (or too far)."""
    value = values[name]
    for _ in range(_MAX_SYMREF_DEPTH):
        if not value.startswith("ref: "):
            return value
        value = values.get(value[len("ref: ") :].strip(), "")
        if not value:
            return None
    return None
