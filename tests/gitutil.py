"""Reading git repositories from tests (argument lists, never a shell)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: str | Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], check=True, capture_output=True, text=True
    ).stdout


def show(repo: str | Path, ref: str, path: str) -> str:
    return git(repo, "show", f"{ref}:{path}")


def branches(repo: str | Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


def tip(repo: str | Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


def trailers(repo: str | Path, commit: str) -> dict[str, str]:
    text = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", commit)
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def parents(repo: str | Path, commit: str) -> list[str]:
    return git(repo, "log", "-1", "--format=%P", commit).split()
