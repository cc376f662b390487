"""Walking and removing untrusted trees (orchestrator/datasets/trees.py) and everything built on them:
hypothesis-generated trees for the walkers, and the trees a hostile tool or member writes (a
thousand folders deep, paths past PATH_MAX, long symlink chains), which used to end in
RecursionError in the hygiene check, the shard walk and the clean-ups."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.datasets import DatasetRepo, RepoSettings, init_bare
from orchestrator.datasets.hygiene import OutputRefused, hand_over, inspect_folder, points_outside
from orchestrator.datasets.local import remove_git_entries
from orchestrator.datasets.trees import (
    MAX_DEPTH,
    TreeLimits,
    TreeTooLarge,
    remove_contents,
    remove_tree,
    walk,
)
from orchestrator.datasets.upkeep import clear_stale_locks, remove_scratch
from orchestrator.runs.fanout.files import combine, list_files

ROOT = os.getuid() == 0
DEEP = 1100


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up of tmp_path is shutil.rmtree: recursive, it fails on these trees."""
    yield
    for child in tmp_path.iterdir():
        remove_tree(child)  # folders: past Python's recursion limit (1000) as a tool would build it


# -- generated trees -------------------------------------------------------------------------------

names = st.text(alphabet="abcXY._-", min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
Tree = dict  # name -> Tree (a folder) | bytes (a file) | ("link", target)
leaves = st.one_of(
    st.binary(max_size=8),
    st.tuples(st.just("link"), st.sampled_from(["a", "../x", "/etc/passwd", ".", "b/c"])),
)
trees = st.recursive(
    st.dictionaries(names, leaves, max_size=4),
    lambda children: st.dictionaries(names, st.one_of(leaves, children), max_size=4),
    max_leaves=40,
)


def build(folder: Path, tree: dict[str, object]) -> None:
    for name, node in tree.items():
        path = folder / name
        if isinstance(node, dict):
            path.mkdir()
            build(path, node)
        elif isinstance(node, tuple):
            path.symlink_to(node[1])
        else:
            assert isinstance(node, bytes)
            path.write_bytes(node)


def expected(tree: dict[str, object], prefix: str = "", depth: int = 1) -> Iterator[tuple[str, int]]:
    """Pre-order, names sorted per folder: what ``walk`` must yield."""
    for name in sorted(tree):
        yield prefix + name, depth
        node = tree[name]
        if isinstance(node, dict):
            yield from expected(node, f"{prefix}{name}/", depth + 1)


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "t"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_walk_yields_every_entry_once_in_order_without_following_links(tree: dict[str, object]) -> None:
    with scratch() as root:
        root.mkdir()
        build(root, tree)
        fds = open_fds()
        walked = [(e.path, e.depth) for e in walk(root)]
        assert walked == list(expected(tree))
        assert open_fds() == fds  # every folder it opened is closed again


def first_past(tree: dict[str, object], entries: int, depth: int) -> str | None:
    """Where a walk with these limits must stop: a folder that holds more entries than are left of
    ``entries`` (refused when listed), or the first entry past the count (a folder's contents took
    it there) or deeper than ``depth``; None: nowhere."""
    count = 0

    def visit(node: dict[str, object], where: str, prefix: str, level: int) -> str | None:
        nonlocal count
        if len(node) > entries - count:
            return where
        for name in sorted(node):
            count += 1
            if count > entries or level > depth:
                return prefix + name
            child = node[name]
            if isinstance(child, dict):
                found = visit(child, prefix + name, f"{prefix}{name}/", level + 1)
                if found is not None:
                    return found
        return None

    return visit(tree, ".", "", 1)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.integers(min_value=0, max_value=30), st.integers(min_value=1, max_value=4))
def test_limits_stop_at_the_first_path_past_them(tree: dict[str, object], entries: int, depth: int) -> None:
    with scratch() as root:
        root.mkdir()
        build(root, tree)
        limits = TreeLimits(max_entries=entries, max_depth=depth)
        stop = first_past(tree, entries, depth)
        if stop is None:
            assert len(list(walk(root, limits))) == len(list(expected(tree)))
        else:
            with pytest.raises(TreeTooLarge) as raised:
                list(walk(root, limits))
            assert raised.value.path == stop


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.booleans())
def test_remove_tree_removes_everything_and_never_raises(tree: dict[str, object], lock: bool) -> None:
    with scratch() as root:
        root.mkdir()
        build(root, tree)
        if lock:  # folders the tool made unreadable and unwritable
            for entry in reversed(list(walk(root))):
                if entry.is_dir:
                    (root / entry.path).chmod(0)
        assert remove_tree(root) is True
        assert not os.path.lexists(root)
        assert remove_tree(root) is True  # already gone: fine


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_git_entries_are_removed_at_any_depth(tree: dict[str, object]) -> None:
    with scratch() as root:
        root.mkdir()
        build(root, tree)
        for entry in [e for e in walk(root) if e.is_dir][:3]:
            (root / entry.path / ".git").mkdir()
            (root / entry.path / ".git" / "HEAD").write_text("x")
        (root / ".GIT").write_text("gitdir: elsewhere")
        remove_git_entries(root)
        assert not [e.path for e in walk(root) if e.name.lower() == ".git"]


# -- hostile shapes --------------------------------------------------------------------------------


def deep_tree(root: Path, depth: int = DEEP, name: str = "d") -> str:
    """A chain of ``depth`` folders (built relative to each one, as a tool can: the whole path may be
    longer than PATH_MAX) with a file at its end; returns the relative path of the deepest folder."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with os.fdopen(os.open("end.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as file:
            file.write("end")
    finally:
        os.close(fd)
    return "/".join([name] * depth)


def test_a_tree_deeper_than_the_recursion_limit_is_walked_and_removed(tmp_path: Path) -> None:
    deep_tree(tmp_path / "t", name="d" * 40)  # 1,100 levels, 45 KB of path: past PATH_MAX too
    fds = open_fds()
    assert sum(1 for _ in walk(tmp_path / "t")) == DEEP + 1
    assert open_fds() == fds
    with pytest.raises(TreeTooLarge, match=f"deeper than the {MAX_DEPTH} folders") as raised:
        list(walk(tmp_path / "t", TreeLimits(max_path_bytes=10**6)))
    assert raised.value.path.count("/") == MAX_DEPTH  # the first path one level too deep
    assert remove_tree(tmp_path / "t") and not (tmp_path / "t").exists()


def test_path_length_is_bounded_too(tmp_path: Path) -> None:
    deep_tree(tmp_path / "t", depth=100, name="n" * 50)  # 5,100 bytes of path in 100 levels
    with pytest.raises(TreeTooLarge, match="longer than the 3072 bytes"):
        list(walk(tmp_path / "t", TreeLimits()))


def test_hygiene_refuses_a_deep_output_naming_it_and_a_reset_empties_it(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    deep_tree(folder)
    with pytest.raises(OutputRefused, match="deeper than the 128 folders") as raised:
        inspect_folder(folder, limits=TreeLimits(1000), what="step s: the output")
    assert raised.value.message.startswith("step s: the output: d/d/d") and raised.value.path
    if ROOT:
        hand_over(folder, (65534, 65534))  # iterative: no RecursionError either
    assert remove_contents(folder) and folder.is_dir() and not any(folder.iterdir())


def test_more_entries_than_max_files_are_refused(tmp_path: Path) -> None:
    for n in range(12):
        (tmp_path / f"f{n:02}").write_text("x")
    with pytest.raises(OutputRefused, match="more than MAO_STEP_MAX_FILES=10 entries") as raised:
        inspect_folder(tmp_path, limits=TreeLimits(10))
    assert raised.value.path == "."  # the folder that holds too many, refused before its walk


def test_a_long_symlink_chain_counts_as_outside_without_recursing(tmp_path: Path) -> None:
    # l0 -> l1 -> ... -> l1999 -> a.txt: past both the kernel's 40 hops and Python's recursion limit.
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "l1999").symlink_to("a.txt")
    for n in range(1998, -1, -1):
        (tmp_path / f"l{n}").symlink_to(f"l{n + 1}")
    assert points_outside(tmp_path / "l0", tmp_path)  # refused rather than followed 2,000 times
    assert not points_outside(tmp_path / "l1990", tmp_path)  # a short chain inside is fine


def test_shard_walks_are_bounded(tmp_path: Path) -> None:
    deep_tree(tmp_path / "snap")
    with pytest.raises(TreeTooLarge):
        list_files(tmp_path / "snap", "**/*", TreeLimits())
    deep_tree(tmp_path / "out1")
    (tmp_path / "work").mkdir()
    with pytest.raises(TreeTooLarge):
        combine([(1, tmp_path / "out1")], tmp_path / "work", TreeLimits())


def test_upkeep_walks_deep_ref_folders_and_removes_deep_scratch(tmp_path: Path) -> None:
    git_dir = tmp_path / "datasets" / "ds.git"
    deepest = deep_tree(git_dir / "refs" / "remotes" / "origin")
    (git_dir / "refs" / "remotes" / "origin" / deepest / "x.lock").write_text("")
    assert [p.name for p in clear_stale_locks(git_dir)] == ["x.lock"]
    deep_tree(tmp_path / "tmp" / "run1" / "0-1")
    (git_dir / "mao-tmp").mkdir()
    deep_tree(git_dir / "mao-tmp" / "batch")
    (git_dir / "mao-index").mkdir()
    (git_dir / "mao-index" / ".snapshot-1").write_text("")
    (git_dir / "mao-index" / "branch-n1").write_text("")  # a branch's own index stays
    removed = remove_scratch(tmp_path)
    assert tmp_path / "tmp" / "run1" in removed and git_dir / "mao-tmp" / "batch" in removed
    assert not any((tmp_path / "tmp").iterdir()) and not any((git_dir / "mao-tmp").iterdir())
    assert sorted(p.name for p in (git_dir / "mao-index").iterdir()) == ["branch-n1"]


def test_a_work_folder_left_deep_is_emptied_by_the_next_prepare(tmp_path: Path) -> None:
    master, _ = init_bare(tmp_path / "fed", "ds")
    repo = DatasetRepo(
        tmp_path / "n1",
        "ds",
        str(master),
        RepoSettings(git_name="n", git_email="n@x.org", max_files=500),
    )
    repo.sync()
    repo.ensure_ground_truth()
    folder, parent = repo.prepare_worktree("s-n1")
    deep_tree(folder)
    with pytest.raises(OutputRefused, match="the output: d/d/d"):
        repo.commit_worktree("s-n1", parent, "m", {})
    assert "work folder" in repo.reset_worktree("s-n1")
    assert not (folder / "d").exists()
    deep_tree(folder)
    folder, again = repo.prepare_worktree("s-n1")  # also when nobody reset it
    assert again == parent and not (folder / "d").exists()


def test_a_checkout_past_the_limits_is_refused_naming_the_path(tmp_path: Path) -> None:
    """Another member pushed a deep tree into ground-truth (with plain git, no MAO of its own): the
    snapshot of it fails, naming the path, and the work folder of a step writing there too."""
    master, _ = init_bare(tmp_path / "fed", "ds")
    clone = tmp_path / "clone"
    git = ["git", "-c", "user.name=m", "-c", "user.email=m@x.org"]
    subprocess.run([*git, "clone", "-q", str(master), str(clone)], check=True)
    deep_tree(clone, depth=200)
    subprocess.run([*git, "-C", str(clone), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(clone), "commit", "-qm", "deep"], check=True)
    subprocess.run(
        [*git, "-C", str(clone), "push", "-q", "origin", "HEAD:refs/heads/ground-truth"], check=True
    )
    reader = DatasetRepo(
        tmp_path / "r",
        "ds",
        str(master),
        RepoSettings(git_name="r", git_email="r@x.org", max_files=10_000),
    )
    reader.sync()
    with pytest.raises(OutputRefused, match="ground-truth .* deeper than the 128 folders"):
        reader.snapshot(tmp_path / "snap")
    with pytest.raises(OutputRefused, match="deeper than the 128 folders"):
        reader.prepare_worktree("s-r")


@pytest.mark.skipif(not ROOT, reason="mode 000 folders stop only a non-root walker")
def test_removal_as_root_ignores_modes(tmp_path: Path) -> None:
    deep_tree(tmp_path / "t", depth=50)
    for path in sorted((tmp_path / "t").rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_dir():
            path.chmod(0)
    assert remove_tree(tmp_path / "t")
    assert stat.S_ISDIR(os.lstat(tmp_path).st_mode)
