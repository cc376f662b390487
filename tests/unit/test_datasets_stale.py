"""A dataset repository that skips a fetch (a work folder prepared on its own node branch, a vote at
the announced tip) when its copies of the master's refs are stale: a push that landed but whose answer
was lost, a restarted process whose first fetch failed, a master moved unannounced, a ground-truth
moved backwards. Each must end as the same step with a fetch first would: never a conflict that is
not one, never a master's change undone."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.datasets import DatasetRepo, RepoSettings, init_bare
from orchestrator.datasets._git import GitCommandFailed
from orchestrator.datasets.bare import PushRejected
from orchestrator.errors import GitError

TRAILERS = {"MAO-Run": "r1", "MAO-Step": "s"}
GT = "refs/remotes/origin/ground-truth"


def node(data_dir: Path, master: Path) -> DatasetRepo:
    return DatasetRepo(data_dir, "ds", str(master), RepoSettings(git_name="N", git_email="n@example.org"))


def git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def landed(master: Path, commit: str, ref: str) -> bool:
    """Whether ``commit`` is in the history of the master's ``ref``."""
    args = ["git", "--git-dir", str(master), "merge-base", "--is-ancestor", commit, ref]
    return subprocess.run(args, capture_output=True).returncode == 0


@pytest.fixture
def master(tmp_path: Path) -> Path:
    master, _ = init_bare(tmp_path / "fed", "ds")
    return master


@pytest.fixture
def repo(tmp_path: Path, master: Path) -> Iterator[DatasetRepo]:
    repo = node(tmp_path / "n", master)
    repo.sync()
    repo.ensure_ground_truth()
    yield repo
    repo.close()


def commit_on(repo: DatasetRepo, branch: str, files: dict[str, str]) -> str:
    folder, parent = repo.prepare_worktree(branch)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    commit, _ = repo.commit_worktree(branch, parent, "out", TRAILERS)
    return commit


def vote(repo: DatasetRepo, branch: str, files: dict[str, str]) -> str:
    """A step of ``branch`` on another instance (its own repository), voted with a fetch first."""
    try:
        repo.sync_for(branch)
        commit = commit_on(repo, branch, files)
        assert repo.merge_and_push(branch, "merge", TRAILERS, commit=commit).merged
    finally:
        repo.close()
    return commit


# -- a push that landed, its answer lost -------------------------------------------------------------

LOST_ANSWERS = {
    "timeout": (-9, "Timeout: "),
    "dropped connection": (128, "fatal: the remote end hung up unexpectedly\n"),
    "remote failure": (1, "error: remote unpack failed: unable to create temporary object directory\n"),
}


@pytest.mark.parametrize("lost", sorted(LOST_ANSWERS))
def test_a_push_landed_unseen_is_fetched_before_the_next_step(
    repo: DatasetRepo, master: Path, lost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vote's push landed on the master but its answer was lost: the local node branch and the
    copies of the master's refs did not move. The next step must start from what the master has,
    not from the old tip (its vote would then conflict with the step's own landed output)."""
    first = commit_on(repo, "n1", {"p": "1"})
    assert repo.merge_and_push("n1", "merge", TRAILERS, commit=first).merged
    second = commit_on(repo, "n1", {"p": "2"})
    status, stderr = LOST_ANSWERS[lost]
    original = repo._git

    def answer_lost(*args: str, **kwargs: Any) -> tuple[int, str]:
        if args[0] != "push":
            return original(*args, **kwargs)
        # Pushed to the URL, not to origin: git moves no copy of the master's refs, as when the
        # answer never came.
        original(*[str(master) if arg == "origin" else arg for arg in args], **kwargs)
        raise GitCommandFailed("push", status, stderr)

    monkeypatch.setattr(repo, "_git", answer_lost)
    with pytest.raises(GitError):
        repo.merge_and_push("n1", "merge", TRAILERS, commit=second)
    monkeypatch.setattr(repo, "_git", original)
    assert git(master, "rev-parse", "n1") == second  # it landed

    repo.sync_for("n1")
    folder, parent = repo.prepare_worktree("n1")
    assert parent == second
    (folder / "p").write_text("3")
    third, _ = repo.commit_worktree("n1", parent, "out", TRAILERS)
    assert repo.merge_and_push("n1", "merge", TRAILERS, commit=third).merged
    assert git(master, "show", "ground-truth:p") == "3"


def test_a_restarted_process_whose_first_fetch_failed_fetches_later(
    tmp_path: Path, repo: DatasetRepo, master: Path
) -> None:
    """A process restarted after its push landed (the local branch never followed) cannot reach the
    master for its first step: the next step fetches, and starts from what the master has."""
    first = commit_on(repo, "n1", {"p": "1"})
    assert repo.merge_and_push("n1", "merge", TRAILERS, commit=first).merged
    repo.close()
    tree = git(master, "rev-parse", "n1^{tree}")
    before_kill = git(master, "commit-tree", tree, "-p", first, "-m", "landed before the kill")
    git(master, "update-ref", "refs/heads/n1", before_kill)
    restarted = node(tmp_path / "n", master)
    away = master.with_name(master.name + ".away")
    shutil.move(master, away)
    with pytest.raises(GitError):
        restarted.sync_for("n1")
    shutil.move(away, master)
    restarted.sync_for("n1")
    _, parent = restarted.prepare_worktree("n1")
    assert parent == before_kill
    restarted.close()


# -- a vote without a fetch on a ground-truth moved unannounced --------------------------------------


def test_a_conflict_with_a_stale_ground_truth_is_merged_again_after_a_fetch(
    tmp_path: Path, repo: DatasetRepo, master: Path
) -> None:
    """The vote's copy of ground-truth is the announced tip, but another node merged unannounced
    since: the step's output conflicts with the stale copy, not with the master's tip. The vote
    merges it on the fetched tip, as a vote with a fetch first would."""
    first = commit_on(repo, "n1", {"p": "base"})
    assert repo.merge_and_push("n1", "merge", TRAILERS, commit=first).merged
    vote(node(tmp_path / "x", master), "x1", {"p": "x"})
    repo.sync()
    announced = repo._refs()[GT]
    vote(node(tmp_path / "y", master), "y1", {"p": "v2"})  # not announced
    ours = commit_on(repo, "n1", {"p": "v2"})
    result = repo.merge_and_push("n1", "merge", TRAILERS, commit=ours, announced=announced)
    assert result.merged and result.conflicts == []
    assert git(master, "rev-parse", "ground-truth") == result.commit
    assert landed(master, ours, "ground-truth")


def test_a_commit_contained_in_a_stale_ground_truth_is_merged_again_after_a_fetch(
    repo: DatasetRepo, master: Path
) -> None:
    """The copy of ground-truth at the announced tip holds the commit, but the master's no longer
    does (an operator moved it back): "already merged" is not taken from the stale copy."""
    before = git(master, "rev-parse", "ground-truth")
    ours = commit_on(repo, "n1", {"p": "1"})
    announced = repo.merge_and_push("n1", "merge", TRAILERS, commit=ours).commit
    assert announced is not None
    git(master, "update-ref", "refs/heads/ground-truth", before)
    result = repo.merge_and_push("n1", "merge", TRAILERS, commit=ours, announced=announced)
    assert result.merged
    assert git(master, "rev-parse", "ground-truth") == result.commit
    assert landed(master, ours, "ground-truth")


# -- a ground-truth moved backwards on the master ----------------------------------------------------


def test_a_ground_truth_moved_back_is_not_fast_forwarded_over(repo: DatasetRepo, master: Path) -> None:
    """An operator moved the master's ground-truth back (dropping a merge): the next vote at the
    announced tip merges onto the master's tip, never onto the dropped one (a fast-forward of it
    would bring the dropped merge back)."""
    first = commit_on(repo, "n1", {"a": "1"})
    kept = repo.merge_and_push("n1", "merge", TRAILERS, commit=first).commit
    second = commit_on(repo, "n1", {"a": "2"})
    dropped = repo.merge_and_push("n1", "merge", TRAILERS, commit=second).commit
    assert kept is not None and dropped is not None
    git(master, "update-ref", "refs/heads/ground-truth", kept)
    third = commit_on(repo, "n1", {"b": "3"})
    result = repo.merge_and_push("n1", "merge", TRAILERS, commit=third, announced=dropped)
    assert result.merged
    assert git(master, "rev-parse", "ground-truth") == result.commit
    assert git(master, "rev-parse", "ground-truth^1") == kept
    assert not landed(master, dropped, "ground-truth")


def test_a_ground_truth_moved_back_after_the_fetch_is_not_pushed_over(
    repo: DatasetRepo, master: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moved back between the vote's fetch and its push: the push is rejected (the branch moved) and
    nothing of it lands; the next vote merges onto the master's tip."""
    first = commit_on(repo, "n1", {"a": "1"})
    kept = repo.merge_and_push("n1", "merge", TRAILERS, commit=first).commit
    assert kept is not None
    second = commit_on(repo, "n1", {"a": "2"})
    fetch = repo.fetch

    def fetch_then_move_back() -> None:
        fetch()
        git(master, "update-ref", "refs/heads/ground-truth", kept)

    dropped = repo.merge_and_push("n1", "merge", TRAILERS, commit=second).commit
    assert dropped is not None
    third = commit_on(repo, "n1", {"b": "3"})
    monkeypatch.setattr(repo, "fetch", fetch_then_move_back)
    with pytest.raises(PushRejected) as rejected:
        repo.merge_and_push("n1", "merge", TRAILERS, commit=third)
    assert rejected.value.moved
    assert git(master, "rev-parse", "ground-truth") == kept
    monkeypatch.setattr(repo, "fetch", fetch)
    assert repo.merge_and_push("n1", "merge", TRAILERS, commit=third).merged
    assert not landed(master, dropped, "ground-truth")
