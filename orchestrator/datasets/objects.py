"""A step's object-only git work in this process (libgit2 through pygit2): the output's tree from the
index ``git add`` wrote, and commit objects. No process to start: each of those was a git process of
about 4 ms on the step's path (``write-tree``, ``commit-tree``, the vote's ``commit-tree``).

Only objects are written here, never a ref, an index or a work folder: libgit2 writes a loose object
to a temporary file and renames it into place (a kill leaves the old state, or a stray ``tmp_*``
file that ``git gc`` prunes), as git does. Refs stay with ``ref_files.write_ref`` and git, and the
network (fetch, push) with git processes under the hardened rules (``_git``).

Each function here returns exactly what the git command it stands for would, or ``None`` when it
cannot be sure of that; the caller then runs the git command, which also gives git's own error
message for an input that is wrong (a missing object, a full disk). So:

- ``tree_of_index``: the index file as libgit2 reads it, written as trees; the same ids as
  ``git write-tree`` (tests/unit/test_datasets_objects.py, generated folders). ``_git`` pins the
  index formats libgit2 might not read (a split index, an index without its checksum) off for git.
- ``commit``: the commit object ``git commit-tree -m`` writes, byte for byte: the author and
  committer as git formats them (``git var``, asked once per identity: git strips "crud" from names
  and emails by rules that differ between its versions), both dated now with the local time zone's
  offset (git's rule when no date is given), and the message as git stores it (ended by a newline;
  a message git would rewrite, i.e. not strict UTF-8 or holding a non-character, and a repeated
  parent, which git drops, go to git).

Opening the repository costs some 0.05 ms, so it is opened per call: nothing cached can outlive a
``git gc`` (a long-lived handle keeps deleted packs mapped) or a repository recreated under the same
path. Calls come from the dataset's worker thread, under its lock (``Datasets.run``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

import git
import pygit2
from pygit2.enums import ConfigLevel, RepositoryOpenFlag

from ._git import hardened_env, run_git

log = logging.getLogger(__name__)

# libgit2 reads the repository's own config only: the operator's global and system files configure
# the git processes (and are pinned there where it matters, _git._CONFIG), never this process.
for _level in (ConfigLevel.GLOBAL, ConfigLevel.XDG, ConfigLevel.SYSTEM, ConfigLevel.PROGRAMDATA):
    pygit2.settings.search_path[_level] = ""

# What libgit2 may fail with on a repository or an input it does not handle as git would; the caller
# then runs git. Anything else is a bug and propagates.
_FALLBACK = (pygit2.GitError, OSError, ValueError, KeyError, TypeError, UnicodeError)



def _git_rewrites(text: str) -> bool:
    """Whether git's verify_utf8 (commit.c) finds a code point invalid and rewrites the message as
    Latin-1: a surrogate, U+FDD0..U+FDEF, or U+xxFFFE / U+xxFFFF of any plane."""
    return any(
        0xD800 <= cp <= 0xDFFF or 0xFDD0 <= cp <= 0xFDEF or cp & 0xFFFE == 0xFFFE
        for cp in map(ord, text)
        if cp >= 0xD800
    )

# Set in this process's environment, these change what git writes (dates, where objects go, config
# given on the command line): git then makes the commit, as it always did.
_GIT_ENVIRONMENT = (
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_DATE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG_PARAMETERS",
)

_idents: dict[tuple[str, str], tuple[str, str]] = {}
_idents_lock = threading.Lock()


def _open(git_dir: Path) -> pygit2.Repository:
    return pygit2.Repository(str(git_dir), RepositoryOpenFlag.NO_SEARCH)


def tree_of_index(git_dir: Path, index: Path) -> str | None:
    """``git write-tree`` of ``index`` (an index file git wrote) into ``git_dir``, or None: git must."""
    try:
        repo = _open(git_dir)
        try:
            return str(pygit2.Index(str(index)).write_tree(repo))
        finally:
            repo.free()
    except _FALLBACK as exc:
        log.debug("write-tree in process not possible (%s): running git", exc)
        return None


def identity(git_dir: Path, name: str, email: str) -> tuple[str, str] | None:
    """(name, email) as git writes them in a commit made with these in GIT_AUTHOR_NAME / _EMAIL, from
    ``git var GIT_AUTHOR_IDENT`` once per pair in this process; None when git refuses the pair (the
    commit then goes to git, which says why)."""
    key = (name, email)
    with _idents_lock:
        known = _idents.get(key)
    if known is not None:
        return known
    env = hardened_env({"GIT_DIR": str(git_dir), "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email})
    args = ["var", "GIT_AUTHOR_IDENT"]
    status, out, _ = run_git(git.Git(str(git_dir)), args, env=env, what="read the identity", ok=(0, 1, 128))
    # "<name> <<email>> <seconds> <offset>": name and email hold no '<' or '>' (git drops them).
    match = re.fullmatch(r"(.*) <([^<>]*)> -?\d+ [+-]\d{4}", out.strip("\n"))
    if status != 0 or match is None:
        return None
    found = (match.group(1), match.group(2))
    with _idents_lock:
        _idents[key] = found
    return found


def message_bytes(message: str) -> bytes | None:
    """The message as ``git commit-tree -m`` stores it, or None when git would rewrite it, could not
    take it as an argument (a NUL), or would read its standard input instead (an empty one)."""
    if not message or "\0" in message or _git_rewrites(message):
        return None
    data = message.encode("utf-8")
    return data if data.endswith(b"\n") else data + b"\n"


def local_offset(when: int) -> int:
    """The local time zone's offset from UTC at ``when``, in minutes, as git computes it."""
    return (time.localtime(when).tm_gmtoff or 0) // 60


def commit(
    git_dir: Path,
    tree: str,
    parents: tuple[str, ...],
    message: str,
    ident: tuple[str, str],
    when: int | None = None,
) -> str | None:
    """``git commit-tree <tree> -p <parent>... -m <message>`` with ``ident`` (from ``identity``) as
    author and committer, dated ``when`` (default: now); None when git must make it."""
    data = message_bytes(message)
    if data is None or any(name in os.environ for name in _GIT_ENVIRONMENT):
        return None
    if len(set(parents)) != len(parents):  # git drops a repeated parent (with a warning)
        return None
    when = int(time.time()) if when is None else when
    try:
        signature = pygit2.Signature(ident[0], ident[1], when, local_offset(when), "utf-8")
        repo = _open(git_dir)
        try:
            oid = repo.create_commit(
                None, signature, signature, data, pygit2.Oid(hex=tree), [pygit2.Oid(hex=p) for p in parents]
            )
        finally:
            repo.free()
    except _FALLBACK as exc:
        log.debug("commit-tree in process not possible (%s): running git", exc)
        return None
    return str(oid)
