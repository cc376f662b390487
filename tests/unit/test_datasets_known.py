"""What a dataset repository skips asking git (datasets/known.py, datasets/ref_files.py), and that the
answers stay git's: the refs read from files equal ``for-each-ref``'s, a folder known to hold the
parent is handed out as a reset would leave it, and a commit once pushed is checked again."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.datasets import DatasetRepo, RepoSettings, init_bare, ref_files
from orchestrator.datasets.ref_files import read_refs, write_ref

TRAILERS = {"MAO-Run": "r1", "MAO-Step": "s"}


def node(tmp_path: Path, master: Path) -> DatasetRepo:
    return DatasetRepo(
        tmp_path / "node", "ds", str(master), RepoSettings(git_name="N", git_email="n@example.org")
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[DatasetRepo]:
    master, _ = init_bare(tmp_path / "fed", "ds")
    repo = node(tmp_path, master)
    repo.sync()
    repo.ensure_ground_truth()
    yield repo
    repo.close()


@pytest.fixture
def git_calls(repo: DatasetRepo, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The git subcommands the repository runs from now on."""
    calls: list[str] = []
    original = repo._git

    def counted(*args: str, **kwargs: Any) -> tuple[int, str]:
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(repo, "_git", counted)
    return calls


def git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def for_each_ref(git_dir: Path) -> dict[str, str]:
    out = git(
        git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/", "refs/remotes/origin/"
    )
    return {ref: oid for oid, ref in (line.split(" ", 1) for line in out.splitlines())}


# -- refs read from files ----------------------------------------------------------------------------

_NAMES = st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,6}(/[a-z][a-z0-9]{0,6})?", fullmatch=True),
    min_size=1,
    max_size=8,
    unique=True,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_NAMES, packed=st.booleans(), moved=st.integers(min_value=0, max_value=7), symref=st.booleans())
def test_refs_from_files_equal_for_each_ref(
    repo: DatasetRepo, names: list[str], packed: bool, moved: int, symref: bool
) -> None:
    tip = repo._refs()["refs/remotes/origin/ground-truth"]
    tree = git(repo.git_dir, "rev-parse", f"{tip}^{{tree}}").strip()
    other = git(repo.git_dir, "commit-tree", tree, "-p", tip, "-m", "other").strip()
    # Branch names from the generator may clash as file and folder (a and a/b): git refuses those.
    for ref in [r for r in for_each_ref(repo.git_dir) if r.startswith("refs/heads/")]:
        git(repo.git_dir, "update-ref", "-d", ref)
    made = []
    for name in names:
        ref = f"refs/heads/{name}"
        if (
            subprocess.run(
                ["git", "--git-dir", str(repo.git_dir), "update-ref", ref, tip], capture_output=True
            ).returncode
            == 0
        ):
            made.append(ref)
    if packed:
        git(repo.git_dir, "pack-refs", "--all")
    if made:  # a loose ref overriding its packed copy
        git(repo.git_dir, "update-ref", made[moved % len(made)], other)
    if symref:
        git(repo.git_dir, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/ground-truth")
    else:
        subprocess.run(
            ["git", "--git-dir", str(repo.git_dir), "symbolic-ref", "-d", "refs/remotes/origin/HEAD"],
            capture_output=True,
        )
    assert read_refs(repo.git_dir, ("refs/heads/", "refs/remotes/origin/")) == for_each_ref(repo.git_dir)
    assert repo._refs() == for_each_ref(repo.git_dir)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_NAMES, packed=st.booleans(), moved=st.integers(min_value=0, max_value=7), when=st.integers(0, 3))
def test_refs_packed_while_read_are_all_found(
    repo: DatasetRepo,
    monkeypatch: pytest.MonkeyPatch,
    names: list[str],
    packed: bool,
    moved: int,
    when: int,
) -> None:
    """An operator's ``git pack-refs --prune`` (a gc) moves loose refs into packed-refs at any moment
    between the reads of the ref files (``when``: before which of the three, 3 = none): every ref is
    found all the same, at its value."""
    tip = repo._refs()["refs/remotes/origin/ground-truth"]
    tree = git(repo.git_dir, "rev-parse", f"{tip}^{{tree}}").strip()
    other = git(repo.git_dir, "commit-tree", tree, "-p", tip, "-m", "other").strip()
    git(repo.git_dir, "pack-refs", "--all")  # the branches of earlier examples, out of the way
    for ref in [r for r in for_each_ref(repo.git_dir) if r.startswith("refs/heads/")]:
        git(repo.git_dir, "update-ref", "-d", ref)
    made = []
    for name in names:
        ref = f"refs/heads/{name}"
        args = ["git", "--git-dir", str(repo.git_dir), "update-ref", ref, tip]
        if subprocess.run(args, capture_output=True).returncode == 0:
            made.append(ref)
    if packed:
        git(repo.git_dir, "pack-refs", "--all")
    if made:  # a loose ref overriding its packed copy
        git(repo.git_dir, "update-ref", made[moved % len(made)], other)
    expected = for_each_ref(repo.git_dir)
    reads = [0]

    def gc_before(read: Any) -> Any:
        def reading(*args: Any) -> Any:
            if reads[0] == when:
                git(repo.git_dir, "pack-refs", "--all", "--prune")
            reads[0] += 1
            return read(*args)

        return reading

    monkeypatch.setattr(ref_files, "_loose", gc_before(ref_files._loose))
    monkeypatch.setattr(ref_files, "_packed", gc_before(ref_files._packed))
    try:
        assert read_refs(repo.git_dir, ("refs/heads/", "refs/remotes/origin/")) == expected
    finally:
        monkeypatch.undo()


def test_refs_not_plainly_readable_are_asked_of_git(repo: DatasetRepo) -> None:
    heads = repo.git_dir / "refs" / "heads"
    (heads / "odd").write_text("not an object id\n")
    assert read_refs(repo.git_dir, ("refs/heads/",)) is None
    (heads / "odd").unlink()
    (heads / "stale.lock").write_text("0" * 40)  # a killed git's lock file: no ref
    assert "refs/heads/stale.lock" not in (read_refs(repo.git_dir, ("refs/heads/",)) or {})
    with (repo.git_dir / "config").open("a") as config:
        config.write("[extensions]\n\trefStorage = reftable\n")
    assert read_refs(repo.git_dir, ("refs/heads/",)) is None


# -- the work folder and the commit ------------------------------------------------------------------


def one_step(repo: DatasetRepo, files: dict[str, str]) -> str:
    folder, parent = repo.prepare_worktree("n1")
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    commit, _ = repo.commit_worktree("n1", parent, "out", TRAILERS)
    result = repo.merge_and_push("n1", "merge", TRAILERS, commit=commit)
    assert result.merged
    return commit


def test_a_folder_holding_the_parent_is_handed_out_without_git(
    repo: DatasetRepo, git_calls: list[str]
) -> None:
    commit = one_step(repo, {"a.txt": "1", "d/b.txt": "2"})
    git_calls.clear()
    folder, parent = repo.prepare_worktree("n1")
    assert parent == commit
    assert git_calls == []  # no read-tree, no clean, refs from the files
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["a.txt", "d", "d/b.txt"]
    # ... and the next commit needs no rev-parse of its parent.
    (folder / "a.txt").write_text("3")
    repo.commit_worktree("n1", parent, "out", TRAILERS)
    assert git_calls == ["add"]  # the tree and the commit are made in process (objects.py)


def test_what_git_would_not_keep_makes_the_next_prepare_reset(
    repo: DatasetRepo, git_calls: list[str]
) -> None:
    one_step(repo, {"a.txt": "1", "empty/.keep-not": "x"})
    folder, parent = repo.prepare_worktree("n1")
    (folder / "empty" / ".keep-not").unlink()  # an empty folder: git keeps none, a reset removes it
    (folder / "a.txt").write_text("2")
    commit, _ = repo.commit_worktree("n1", parent, "out", TRAILERS)
    repo.merge_and_push("n1", "merge", TRAILERS, commit=commit)
    git_calls.clear()
    folder, _ = repo.prepare_worktree("n1")
    assert "read-tree" in git_calls and "clean" in git_calls
    assert not (folder / "empty").exists()


def test_a_folder_changed_by_a_failure_is_reset(repo: DatasetRepo, git_calls: list[str]) -> None:
    one_step(repo, {"a.txt": "1"})
    folder, _ = repo.prepare_worktree("n1")
    (folder / "junk").write_text("a failed tool's")
    repo.reset_worktree("n1")
    git_calls.clear()
    folder, _ = repo.prepare_worktree("n1")
    assert "read-tree" in git_calls
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]


def test_a_commit_once_pushed_is_checked_against_ground_truth(
    repo: DatasetRepo, git_calls: list[str]
) -> None:
    """A commit made here and never pushed is not looked for in ground-truth; once a push of it was
    started (the queued path pushes the node branch first), it is: never merged twice."""
    one_step(repo, {"a.txt": "1"})
    folder, parent = repo.prepare_worktree("n1")
    (folder / "a.txt").write_text("2")
    commit, _ = repo.commit_worktree("n1", parent, "out", TRAILERS)
    git_calls.clear()
    first = repo.merge_and_push("n1", "merge", TRAILERS, commit=commit)
    assert first.merged and "merge-base" not in git_calls
    git_calls.clear()
    again = repo.merge_and_push("n1", "merge", TRAILERS, commit=commit)
    assert "merge-base" in git_calls
    assert not again.merged and again.commit == first.commit


# -- a branch moved without git --------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packed=st.booleans(), existed=st.booleans())
def test_a_branch_written_here_is_what_git_reads(repo: DatasetRepo, packed: bool, existed: bool) -> None:
    tip = repo._refs()["refs/remotes/origin/ground-truth"]
    tree = git(repo.git_dir, "rev-parse", f"{tip}^{{tree}}").strip()
    other = git(repo.git_dir, "commit-tree", tree, "-p", tip, "-m", "other").strip()
    subprocess.run(
        ["git", "--git-dir", str(repo.git_dir), "update-ref", "-d", "refs/heads/w"], capture_output=True
    )
    if existed:
        git(repo.git_dir, "update-ref", "refs/heads/w", tip)
    if packed:
        git(repo.git_dir, "pack-refs", "--all")
    assert write_ref(repo.git_dir, "refs/heads/w", other)
    assert git(repo.git_dir, "rev-parse", "refs/heads/w").strip() == other
    assert for_each_ref(repo.git_dir)["refs/heads/w"] == other
    assert not (repo.git_dir / "refs" / "heads" / "w.lock").exists()


def test_a_branch_git_must_write(repo: DatasetRepo) -> None:
    tip = repo._refs()["refs/remotes/origin/ground-truth"]
    heads = repo.git_dir / "refs" / "heads"
    (heads / "w.lock").write_text("")  # a killed git's: git names it in its error, nothing is written
    assert not write_ref(repo.git_dir, "refs/heads/w", tip)
    assert not (heads / "w").exists()
    (heads / "w.lock").unlink()
    (repo.git_dir / "logs" / "refs" / "heads").mkdir(parents=True)
    (repo.git_dir / "logs" / "refs" / "heads" / "w").write_text("")  # a reflog to append to
    assert not write_ref(repo.git_dir, "refs/heads/w", tip)
    assert not write_ref(repo.git_dir, "refs/remotes/origin/w", tip)  # only branches
    assert not write_ref(repo.git_dir, "refs/heads/x", "--all")  # only object ids


@pytest.mark.parametrize("scope", ["repository", "global", "system"])
@pytest.mark.parametrize("value", ["true", "always"])
def test_a_branch_written_here_keeps_a_reflog_as_git_would(
    tmp_path: Path, repo: DatasetRepo, monkeypatch: pytest.MonkeyPatch, scope: str, value: str
) -> None:
    """core.logAllRefUpdates set in any config file: a branch moved without git (``_advance``) and
    one moved by git as this package runs it agree on whether a reflog is kept."""
    if scope == "repository":
        git(repo.git_dir, "config", "core.logAllRefUpdates", value)
    else:
        config = tmp_path / f"{scope}.gitconfig"
        config.write_text(f"[core]\n\tlogAllRefUpdates = {value}\n")
        monkeypatch.setenv(f"GIT_CONFIG_{scope.upper()}", str(config))
    tip = repo._refs()["refs/remotes/origin/ground-truth"]
    repo._advance("w", tip)
    repo._git("update-ref", "refs/heads/v", tip, what="move a branch by git")
    logs = repo.git_dir / "logs" / "refs" / "heads"
    assert (logs / "w").exists() == (logs / "v").exists()
    assert not (logs / "w").exists()  # none is started: the branch was moved without a git process
    assert git(repo.git_dir, "rev-parse", "refs/heads/w").strip() == tip


def test_a_node_branch_of_ours_needs_no_fetch(repo: DatasetRepo, git_calls: list[str]) -> None:
    repo.sync_for("n1")  # no node branch yet: the master's ground-truth is where it starts
    assert "fetch" in git_calls
    one_step(repo, {"a.txt": "1"})
    git_calls.clear()
    repo.sync_for("n1")
    assert git_calls == []
    fresh = node(repo.data_dir.parent, Path(repo.master))  # a new process: nothing known, it fetches
    fresh.sync_for("n1")
    assert fresh._synced  # it fetched
    fresh.close()


# -- a vote without a fetch ------------------------------------------------------------------------


def test_a_vote_at_the_announced_tip_needs_no_fetch(repo: DatasetRepo, git_calls: list[str]) -> None:
    one_step(repo, {"a.txt": "1"})
    announced = repo._refs()["refs/remotes/origin/ground-truth"]
    folder, parent = repo.prepare_worktree("n1")
    (folder / "a.txt").write_text("2")
    commit, _ = repo.commit_worktree("n1", parent, "out", TRAILERS)
    git_calls.clear()
    result = repo.merge_and_push("n1", "merge", TRAILERS, commit=commit, announced=announced)
    assert result.merged and "fetch" not in git_calls
    assert git(Path(repo.master), "rev-parse", "ground-truth").strip() == result.commit


def test_a_master_moved_unannounced_is_merged_after_a_fetch(tmp_path: Path, repo: DatasetRepo) -> None:
    """Someone pushed ground-truth without announcing it: the push on the stale tip is rejected,
    nothing of it lands, and the merge is done again on the fetched tip; nothing is lost."""
    one_step(repo, {"a.txt": "1"})
    announced = repo._refs()["refs/remotes/origin/ground-truth"]
    other = node(tmp_path / "other", Path(repo.master))
    other.sync()
    folder, parent = other.prepare_worktree("o1")
    (folder / "b.txt").write_text("theirs")
    theirs, _ = other.commit_worktree("o1", parent, "out", TRAILERS)
    moved = other.merge_and_push("o1", "merge", TRAILERS, commit=theirs)
    other.close()
    folder, parent = repo.prepare_worktree("n1")
    (folder / "a.txt").write_text("2")
    commit, _ = repo.commit_worktree("n1", parent, "out", TRAILERS)
    result = repo.merge_and_push("n1", "merge", TRAILERS, commit=commit, announced=announced)
    assert result.merged
    parents = git(Path(repo.master), "rev-list", "--parents", "-n", "1", "ground-truth").split()
    assert parents[1:] == [moved.commit, commit]


def test_the_vote_of_a_branch_that_alone_writes_its_dataset_needs_no_merge_tree(
    repo: DatasetRepo, git_calls: list[str]
) -> None:
    """Ground-truth holds the branch's previous output (it alone writes the dataset): the vote's merge
    is the new commit's tree, as git's merge makes it, with no git process but the fetch and push."""
    one_step(repo, {"a.txt": "1", "d/b.txt": "2"})
    for files in ({"a.txt": "3"}, {"d/c.txt": "4", "e/f": "5"}):
        git_calls.clear()
        commit = one_step(repo, files)
        assert git_calls == ["add", "fetch", "push"]  # the fetch: no announced advance passed here
        tip = git(repo.git_dir, "rev-parse", "refs/remotes/origin/ground-truth").strip()
        parent, merged = git(repo.git_dir, "rev-parse", f"{tip}^1", f"{tip}^{{tree}}").split()
        status = git(repo.git_dir, "merge-tree", "--write-tree", parent, commit).split()[0]
        assert merged == status == git(repo.git_dir, "rev-parse", f"{commit}^{{tree}}").strip()


def test_a_vote_onto_a_ground_truth_that_holds_more_asks_git(
    repo: DatasetRepo, git_calls: list[str], tmp_path: Path
) -> None:
    """Another branch's output in ground-truth: the merge is git's (merge-tree), both outputs kept."""
    one_step(repo, {"a.txt": "1"})
    folder, parent = repo.prepare_worktree("n2")
    (folder / "other.txt").write_text("x")
    commit, _ = repo.commit_worktree("n2", parent, "out", TRAILERS)
    assert repo.merge_and_push("n2", "merge", TRAILERS, commit=commit).merged
    git_calls.clear()
    one_step(repo, {"a.txt": "2"})
    assert "merge-tree" in git_calls
    tip = git(repo.git_dir, "rev-parse", "refs/remotes/origin/ground-truth").strip()
    assert git(repo.git_dir, "ls-tree", "--name-only", tip).split() == ["a.txt", "other.txt"]
