"""Generated folder trees (hypothesis) for the file-handling code: files, folders and symlinks whose
targets stay inside, lead outside, or dangle, to any depth the test asks for."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

NAMES = ("a", "b", "c", ".git")
LINK_TARGETS = (
    "a",
    "b/c",
    "../a",
    "./b",
    ".",
    "..",
    "../..",
    "../../..",
    "/etc",
    "/etc/passwd",
    "a/../..",
    "missing",
)


@dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]
    kind: str  # file, dir, link
    content: bytes = b""
    target: str = ""
    mode: int = 0o644


entries = st.builds(
    Entry,
    path=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple),
    kind=st.sampled_from(("file", "dir", "link")),
    content=st.binary(max_size=64),
    target=st.sampled_from(LINK_TARGETS),
    mode=st.sampled_from((0o644, 0o600, 0o755, 0o400)),
)
trees = st.lists(entries, max_size=12)


def build(root: Path, tree: list[Entry]) -> None:
    """Make ``tree`` under the existing folder ``root``; entries that clash with earlier ones are skipped."""
    for entry in tree:
        path = root.joinpath(*entry.path)
        parent = root
        ok = True
        for part in entry.path[:-1]:
            parent = parent / part
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                ok = False
                break
            parent.mkdir(exist_ok=True)
        if not ok or os.path.lexists(path):
            continue
        if entry.kind == "dir":
            path.mkdir()
        elif entry.kind == "file":
            path.write_bytes(entry.content)
            path.chmod(entry.mode)
        else:
            path.symlink_to(entry.target)


def listing(root: Path) -> dict[str, tuple[str, object, int]]:
    """Every entry below ``root`` (never following links): kind, content or target, permission bits."""
    found: dict[str, tuple[str, object, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            info = path.lstat()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path), 0)
            elif path.is_dir():
                found[rel] = ("dir", None, 0)
            else:
                found[rel] = ("file", path.read_bytes(), info.st_mode & 0o777)
    return found
