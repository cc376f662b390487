"""Local-filesystem helpers of the dataset repositories: name checks, bare-repository creation,
work-folder hygiene and commit messages with provenance trailers."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import git

from executor.wire.names import name_problem
from orchestrator.errors import BadRequest

from ..domain.masters import check_master
from ._git import hardened_env, run_git
from .trees import TreeLimits, remove_entry, walk

log = logging.getLogger(__name__)

GROUND_TRUTH = "ground-truth"
# One record per commit: fields NUL-separated, records ended by RS (0x1e); trailers unfolded, one a line.
LOG_FORMAT = "%H%x00%an%x00%ae%x00%aI%x00%s%x00%(trailers:only,unfold)%x1e"
_TRAILER_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def checked_name(value: object, what: str) -> str:
    problem = name_problem(value, what)
    if problem:
        raise BadRequest(problem)
    assert isinstance(value, str)
    return value


def checked_master(master: str) -> str:
    problem = check_master(master)
    if problem:
        raise BadRequest(problem)
    return master


def init_bare_at(path: Path, what: str) -> None:
    """``git init --bare`` at ``path``: no template (no sample hooks), HEAD -> ground-truth so that a
    plain clone of the dataset checks out ground-truth. Re-running it on an existing repository is safe."""
    path.mkdir(parents=True, exist_ok=True)
    args = ["init", "--bare", "--quiet", "--template=", f"--initial-branch={GROUND_TRUTH}"]
    run_git(git.Git(str(path)), args, env=hardened_env({"GIT_DIR": str(path)}), what=what)


def init_bare(data_dir: Path, name: str) -> tuple[Path, bool]:
    """Create ``<data_dir>/repos/<name>.git`` if missing; returns (path, created). Idempotent."""
    name = checked_name(name, "dataset name")
    path = Path(data_dir) / "repos" / f"{name}.git"
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path, False
    init_bare_at(path, f"create the bare repository {name!r}")
    # A master is shared by the whole federation: nobody may rewrite or delete its history, and objects
    # pushed in are checked.
    env = hardened_env({"GIT_DIR": str(path)})
    for key, value in (
        ("receive.denyNonFastForwards", "true"),
        ("receive.denyDeletes", "true"),
        ("receive.fsckObjects", "true"),
    ):
        run_git(git.Git(str(path)), ["config", key, value], env=env, what=f"configure repository {name!r}")
    return path, True


def remove_git_entries(folder: Path, limits: TreeLimits | None = None) -> list[str]:
    """Delete every ``.git`` (any case) below ``folder``.

    git skips such entries when cleaning and refuses to add them, and a nested repository would be
    committed as a submodule link instead of its files; tool output must be plain files. The walk is
    iterative and bounded by ``limits`` (``TreeTooLarge`` past them, see ``trees``)."""
    removed: list[str] = []
    for entry in walk(folder, limits, descend=lambda entry: entry.name.lower() != ".git"):
        if entry.name.lower() == ".git":
            remove_entry(entry.dir_fd, entry.name)
            removed.append(entry.path)
    if removed:
        log.warning("removed git metadata from %s: %s", folder, ", ".join(removed[:10]))
    return removed


def format_message(message: str, trailers: Mapping[str, str]) -> str:
    body = message.strip("\n")
    if not body.strip():
        raise BadRequest("a commit message must not be empty")
    lines = []
    for key, value in trailers.items():
        value = str(value)
        if not _TRAILER_KEY_RE.fullmatch(key):
            raise BadRequest(f"invalid trailer key {key!r}: use letters, digits and '-'")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise BadRequest(f"trailer {key!r} must not contain line breaks or control characters")
        lines.append(f"{key}: {value}")
    return body + ("\n\n" + "\n".join(lines) if lines else "") + "\n"


def parse_log(out: str) -> list[dict[str, Any]]:
    """Parse ``git log --format=LOG_FORMAT`` output into dicts (commit, author, email, date, subject,
    trailers)."""
    entries = []
    for record in out.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        commit, author, email, date, subject, trailer_text = record.split("\0", 5)
        trailers: dict[str, str] = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                trailers[key.strip()] = value.strip()
        entry = {"commit": commit, "author": author, "email": email, "date": date, "subject": subject}
        entries.append({**entry, "trailers": trailers})
    return entries
