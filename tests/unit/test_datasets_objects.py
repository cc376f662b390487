"""The object-only git work done in process (orchestrator/datasets/objects.py) against git itself, on
generated inputs: the same tree ids as ``git write-tree`` for whatever folder ``git add -A -f`` took
in, the same commit objects (byte for byte) as ``git commit-tree``, and object writes a SIGKILL
cannot leave half-made."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.datasets import DatasetRepo, RepoSettings, init_bare, objects
from orchestrator.datasets._git import hardened_env
from orchestrator.datasets.local import init_bare_at

GIT = shutil.which("git") or "git"


def git(git_dir: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    full = {**os.environ, **hardened_env({"GIT_DIR": str(git_dir), **(env or {})})}
    done = subprocess.run([GIT, *args], env=full, input=input, capture_output=True, check=True)  # noqa: S603
    return done.stdout.decode().strip()


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "r.git"
    init_bare_at(path, "create")
    return path


@pytest.fixture
def time_zone() -> Iterator[None]:
    """Restores this process's TZ after a test that changes it."""
    before = os.environ.get("TZ")
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


# -- write-tree ------------------------------------------------------------------------------------

# Names that sort differently as files and folders ("a" < "a-b" < "a.b" < "a/" ...), odd characters,
# names git itself treats specially when found in a work tree (.gitignore, .gitattributes).
_NAMES = st.sampled_from(
    ["a", "a-b", "a.b", "a0", "b", "A", "é", "日本", "sp ace", "x\ty", "-n", ".gitignore", ".gitattributes",
     ".hidden", "a~", "z" * 40]
)  # fmt: skip
_LEAF = st.one_of(
    st.tuples(st.just("file"), st.binary(max_size=64), st.booleans()),
    st.tuples(st.just("link"), st.sampled_from(["a", "../a", "b/c", "missing", "é"]), st.just(False)),
    st.tuples(st.just("empty"), st.just(b""), st.just(False)),
)
_TREE = st.recursive(
    _LEAF, lambda inner: st.dictionaries(_NAMES, inner, min_size=1, max_size=5), max_leaves=20
)


def _materialise(folder: Path, node: object) -> None:
    assert isinstance(node, dict)
    for name, child in node.items():
        path = folder / name
        if isinstance(child, dict):
            path.mkdir()
            _materialise(path, child)
            continue
        kind, value, executable = child
        if kind == "file":
            # An ignore or attributes file gets content git acts on: a pattern, a filter of line ends.
            if name == ".gitignore":
                value = b"*\n!a\n"
            elif name == ".gitattributes":
                value = b"* text eol=crlf\na* -text\n"
            path.write_bytes(value)
            path.chmod(0o755 if executable else 0o644)
        elif kind == "link":
            path.symlink_to(value)
        else:
            path.mkdir()


def _fill(folder: Path, node: object) -> None:
    for entry in list(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    _materialise(folder, node if isinstance(node, dict) else {"only": node})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_TREE, second=_TREE, version=st.sampled_from(["2", "3", "4"]), reset=st.booleans())
def test_the_tree_of_an_index_is_git_write_trees(
    tmp_path: Path, first: object, second: object, version: str, reset: bool
) -> None:
    """Two steps in one work folder with one index (the second reuses the first's stat data, and with
    ``reset`` the cached trees ``read-tree`` leaves, as prepare_worktree does), in each index format
    git writes: libgit2's tree is git's."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        root = Path(scratch)
        bare, folder, index = root / "r.git", root / "work", root / "index"
        init_bare_at(bare, "create")
        folder.mkdir()
        env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(folder), "GIT_INDEX_VERSION": version}
        for n, tree in enumerate((first, second)):
            _fill(folder, tree)
            git(bare, "add", "-A", "-f", env=env)
            made = objects.tree_of_index(bare, index)
            assert made == git(bare, "write-tree", env=env)
            if n == 0 and reset:
                git(bare, "read-tree", "--reset", "-u", made, env=env)


def test_an_operators_index_settings_do_not_reach_libgit2(tmp_path: Path, bare: Path) -> None:
    """A global config asking for a split index and the many-files formats: git still writes an index
    libgit2 reads as git does (the pins in _git._CONFIG)."""
    glob = tmp_path / "gitconfig"
    glob.write_text("[core]\n\tsplitIndex = true\n[feature]\n\tmanyFiles = true\n[index]\n\tskipHash = true\n")
    folder, index = tmp_path / "work", tmp_path / "index"
    folder.mkdir()
    for n in range(30):
        (folder / f"f{n}").write_text(str(n))
    env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(folder), "GIT_CONFIG_GLOBAL": str(glob)}
    git(bare, "add", "-A", "-f", env=env)
    assert not list(tmp_path.glob("sharedindex.*")) and not list(bare.glob("sharedindex.*"))
    assert objects.tree_of_index(bare, index) == git(bare, "write-tree", env=env)


def test_an_index_naming_a_missing_object_goes_to_git(tmp_path: Path, bare: Path) -> None:
    folder, index = tmp_path / "work", tmp_path / "index"
    folder.mkdir()
    (folder / "a").write_text("only here\n")
    env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(folder)}
    git(bare, "add", "-A", env=env)
    blob = git(bare, "hash-object", str(folder / "a"))
    (bare / "objects" / blob[:2] / blob[2:]).unlink()
    assert objects.tree_of_index(bare, index) is None  # git write-tree fails on it too
    with pytest.raises(subprocess.CalledProcessError):
        git(bare, "write-tree", env=env)


# -- commit-tree -----------------------------------------------------------------------------------

# What git rewrites (non-characters, surrogates an argument can or cannot carry) and what it keeps.
_ODD_CHARACTERS = st.sampled_from(
    ["\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff", "\udc80", "\ud800", "\ufdcf",
     "\ufff0", "\r", "\x7f", "é", "\U0001f600"]
)  # fmt: skip
_ZONES = st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham",
                          "America/Los_Angeles", "Australia/Lord_Howe", "Asia/Kathmandu"])  # fmt: skip
# What RepoSettings lets through: no control characters, no '<' or '>'; git strips "crud" around them.
_IDENT = st.text(st.characters(min_codepoint=32, exclude_characters="<>", exclude_categories=("Cs",)),
                 max_size=12)  # fmt: skip


def _git_commit(bare: Path, tree: str, parents: tuple[str, ...], message: str, ident: tuple[str, str],
                when: int) -> str:  # fmt: skip
    args = ["commit-tree", "--no-gpg-sign", tree]
    for parent in parents:
        args += ["-p", parent]
    env = {
        "GIT_AUTHOR_NAME": ident[0], "GIT_AUTHOR_EMAIL": ident[1],
        "GIT_COMMITTER_NAME": ident[0], "GIT_COMMITTER_EMAIL": ident[1],
        "GIT_AUTHOR_DATE": f"@{when}", "GIT_COMMITTER_DATE": f"@{when}",
    }  # fmt: skip
    return git(bare, *args, "-m", message, env=env)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    message=st.lists(st.one_of(st.text(max_size=8), _ODD_CHARACTERS), min_size=1, max_size=6).map("".join),
    name=_IDENT,
    email=_IDENT,
    zone=_ZONES,
    when=st.integers(min_value=10**8, max_value=4 * 10**9),
    n_parents=st.integers(min_value=0, max_value=3),
    repeat=st.booleans(),
)
def test_a_commit_is_git_commit_trees_byte_for_byte(
    bare: Path,
    time_zone: None,
    message: str,
    name: str,
    email: str,
    zone: str,
    when: int,
    n_parents: int,
    repeat: bool,
) -> None:
    """Any message, identity RepoSettings accepts, time zone, date and number of parents: the commit
    made in process is the object git makes, or it is left to git."""
    assume("\0" not in message)  # no argument can carry it: git never sees such a message either
    os.environ["TZ"] = zone
    time.tzset()
    # Git dates its own commits (no GIT_*_DATE: how the orchestrator runs it) with the zone's offset
    # at that instant, which objects.commit matches. An "@<seconds>" date, the only way to ask git
    # for a given instant here, takes the offset at the local time that reads as that instant's UTC
    # time instead (date.c: mktime of gmtime's fields); the two differ within hours of a change of
    # daylight saving time, where git is not asked the orchestrator's question: those are left out.
    assume(objects.local_offset(when) * 60 == when - int(time.mktime((*time.gmtime(when)[:8], -1))))
    tree = git(bare, "mktree", input=b"")
    parents: tuple[str, ...] = ()
    for n in range(n_parents):
        parents += (_git_commit(bare, tree, parents[-1:], f"p{n}", ("P", "p@x"), 10**9 + n),)
    parents += parents[:1] if repeat else ()
    try:
        expected = _git_commit(bare, tree, parents, message, (name, email), when)
    except UnicodeEncodeError:  # no argument can carry it: git never gets it, nor does libgit2
        assert objects.message_bytes(message) is None
        return
    except subprocess.CalledProcessError:
        assert objects.identity(bare, name, email) is None  # git refuses the identity: so do we
        return
    ident = objects.identity(bare, name, email)
    assert ident is not None
    made = objects.commit(bare, tree, parents, message, ident, when=when)
    if made is None:  # only a message git would rewrite, an empty name or email, a repeated parent
        assert objects.message_bytes(message) is None or "" in ident or len(set(parents)) < len(parents)
        return
    assert made == expected


@pytest.mark.parametrize("text", ["\ufffe", "a\ufdd0b", "\U0001ffff", "x\udc80"])
def test_a_message_git_would_rewrite_is_left_to_git(text: str) -> None:
    assert objects.message_bytes(text) is None


def test_a_step_commits_and_votes_the_same_with_and_without_libgit2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DatasetRepo's commits (the step's output, the vote's merge) made through libgit2 and through
    the git processes it falls back to: the same trees, parents, identities and messages (the dates
    are each path's own clock; the byte-for-byte test above holds them equal)."""
    shown: list[list[str]] = []
    answers: list[str | None] = []
    real_tree, real_commit = objects.tree_of_index, objects.commit

    def spy_tree(*args: Path) -> str | None:
        answers.append(real_tree(*args))
        return answers[-1]

    def spy_commit(*args: object, **kwargs: object) -> str | None:
        answers.append(real_commit(*args, **kwargs))  # type: ignore[arg-type]
        return answers[-1]

    for libgit2 in (True, False):
        if libgit2:
            monkeypatch.setattr(objects, "tree_of_index", spy_tree)
            monkeypatch.setattr(objects, "commit", spy_commit)
        else:
            monkeypatch.setattr(objects, "tree_of_index", lambda *_: None)
            monkeypatch.setattr(objects, "commit", lambda *_args, **_kw: None)
        master, _ = init_bare(tmp_path / f"fed{libgit2}", "ds")
        repo = DatasetRepo(tmp_path / f"n{libgit2}", "ds", str(master), RepoSettings(" Node. ", "n@x"))
        repo.sync()
        repo.ensure_ground_truth()
        folder, parent = repo.prepare_worktree("b")
        (folder / "out.txt").write_text("same\n")
        os.symlink("out.txt", folder / "link")
        (folder / "tool").write_text("#!/bin/sh\n")
        (folder / "tool").chmod(0o755)
        commit, changed = repo.commit_worktree("b", parent, "b output", {"Mao-Run": "7"})
        assert changed
        result = repo.merge_and_push("b", "vote b", {"Mao-Run": "7"}, commit=commit)
        assert result.merged and result.commit
        texts = [git(repo.git_dir, "cat-file", "commit", c) for c in (commit, result.commit)]
        # Dates differ (each path's own clock), and so the parents' ids (the initial commits').
        texts = [re.sub(r"> \d+ [+-]\d{4}$", "> <date>", t, flags=re.M) for t in texts]
        shown.append([re.sub(r"^parent \w+$", "parent", t, flags=re.M) for t in texts])
        repo.close()
        if libgit2:  # the initial commit, the output's tree and commit, the merge: all in process
            assert len(answers) == 4 and None not in answers
    assert shown[0] == shown[1]
    assert "Mao-Run: 7" in shown[0][0] and "vote b" in shown[0][1]


# -- crash safety ----------------------------------------------------------------------------------

_WRITER = """
import sys, time
from pathlib import Path
from orchestrator.datasets import objects
bare, tree = Path(sys.argv[1]), sys.argv[2]
ident = ("W", "w@x")
n = 0
while True:
    n += 1
    assert objects.commit(bare, tree, (), "m" * 50000 + str(n), ident) is not None
    if n == 1:
        print("ready", flush=True)  # one commit made: the kill lands among the later ones
"""


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.15, 0.2, 0.3])
def test_a_kill_mid_write_leaves_no_broken_object(bare: Path, delay: float) -> None:
    """SIGKILL while commits are being written as fast as possible: every object in the repository
    is whole (git fsck), whatever the kill interrupted."""
    tree = git(bare, "mktree", input=b"")
    writer = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", _WRITER, str(bare), tree], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    git(bare, "fsck", "--strict", "--no-dangling")
    assert [p for p in (bare / "objects").glob("??/*") if not p.name.startswith("tmp_")]
