"""What the vote's merge relies on when it starts no ``git merge-tree`` (Branches._merged_tree_known),
held against git's own merge (ort) on generated trees and edits."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.datasets._git import hardened_env
from orchestrator.datasets.branches import Branches
from orchestrator.datasets.known import Known
from orchestrator.datasets.local import init_bare_at


def git(git_dir: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    full = {**os.environ, **hardened_env({"GIT_DIR": str(git_dir), **(env or {})})}
    done = subprocess.run(["git", *args], env=full, input=input, capture_output=True, check=True)  # noqa: S603,S607
    return done.stdout.decode().strip()


def _commit(bare: Path, tree: str, parents: tuple[str, ...], message: str) -> str:
    env = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "T",
           "GIT_COMMITTER_EMAIL": "t@x", "GIT_AUTHOR_DATE": "@1000000000", "GIT_COMMITTER_DATE": "@1000000000"}  # fmt: skip
    args = [arg for parent in parents for arg in ("-p", parent)]
    return git(bare, "commit-tree", tree, *args, "-m", message, env=env)

_PATHS = st.lists(st.sampled_from(["a", "b", "d", "e", "a.b", "x y"]), min_size=1, max_size=3).map("/".join)
_FILES = st.dictionaries(_PATHS, st.tuples(st.sampled_from([b"one\n", b"two\n" * 40, b"", b"three"]),
                                           st.booleans()), min_size=1, max_size=8)  # fmt: skip
_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("rename"), st.integers(0, 7), _PATHS),
        st.tuples(st.just("rename folder"), st.sampled_from(["a", "b", "d"]), st.sampled_from(["n", "d/n", "e"])),
        st.tuples(st.just("delete"), st.integers(0, 7), st.just("")),
        st.tuples(st.just("change"), st.integers(0, 7), st.sampled_from(["new\n", "one\n"])),
        st.tuples(st.just("mode"), st.integers(0, 7), st.just("")),
        st.tuples(st.just("add"), st.integers(0, 0), _PATHS),
    ),
    min_size=1,
    max_size=5,
)


def _tree_of(bare: Path, root: Path, files: dict[str, tuple[bytes, bool]]) -> str:
    """The tree of ``files`` as git add -A writes it (paths that clash as file and folder: first wins)."""
    folder, index = Path(tempfile.mkdtemp(dir=root)), Path(tempfile.mktemp(dir=root))
    for rel, (content, executable) in sorted(files.items()):
        path = folder / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue
        path.chmod(0o755 if executable else 0o644)
    env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(folder)}
    git(bare, "add", "-A", "-f", env=env)
    return git(bare, "write-tree", env=env)


def _edited(files: dict[str, tuple[bytes, bool]], edits: list[tuple[str, object, str]]) -> dict[str, tuple[bytes, bool]]:
    out = dict(files)
    for kind, which, arg in edits:
        names = sorted(out)
        if not names:
            break
        name = names[which % len(names)] if isinstance(which, int) else ""
        if kind == "rename":
            out[arg] = out.pop(name)
        elif kind == "rename folder":
            prefix = f"{which}/"
            for path in [p for p in names if p.startswith(prefix)]:
                out[f"{arg}/{path[len(prefix):]}"] = out.pop(path)
        elif kind == "delete":
            out.pop(name)
        elif kind == "change":
            out[name] = (arg.encode(), out[name][1])
        elif kind == "mode":
            out[name] = (out[name][0], not out[name][1])
        else:
            out[arg] = (b"added\n", False)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=_FILES, edits=_EDITS)
def test_a_merge_onto_the_parents_own_tree_is_the_commits_tree(
    tmp_path: Path, files: dict[str, tuple[bytes, bool]], edits: list[tuple[str, object, str]]
) -> None:
    """What Branches._merged_tree_known relies on, against git's own merge (ort) on generated edits
    (renamed files and folders, deletions, changes, modes, additions): merging a commit C made on P
    into a merge commit G that has P as a parent and P's tree gives C's tree, with no conflict."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        root = Path(scratch)
        bare = root / "r.git"
        init_bare_at(bare, "create")
        base, theirs = _tree_of(bare, root, files), _tree_of(bare, root, _edited(files, edits))
        assume(base != theirs)  # commit_worktree makes no commit without a change
        first = _commit(bare, git(bare, "mktree", input=b""), (), "g0")
        parent = _commit(bare, base, (first,), "P")
        onto = _commit(bare, base, (first, parent), "G")
        commit = _commit(bare, theirs, (parent,), "C")
        args = ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", onto, commit]
        assert git(bare, *args).split("\0")[0] == theirs  # check=True: exit 0, no conflict

        known = Known()
        known.made(parent, base, (first,))
        known.made(onto, base, (first, parent))
        known.made(commit, theirs, (parent,))
        holder = type("Holder", (), {"known": known})()
        assert Branches._merged_tree_known(holder, onto, commit) == theirs  # type: ignore[arg-type]
        other = Known()  # ground-truth holding something else: git is asked
        other.made(parent, base, (first,))
        other.made(onto, theirs, (first, parent))
        other.made(commit, theirs, (parent,))
        holder.known = other  # type: ignore[attr-defined]
        assert Branches._merged_tree_known(holder, onto, commit) is None  # type: ignore[arg-type]
