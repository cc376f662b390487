"""Node-branch commits of runs side by side (overlap ``allow``), against real git in tmp_path: each
run has its own folder of the branch (a lane); a commit made after, or voted after, another run's
vote landed is merged with the branch's tip, a clash is a BranchConflict that keeps the commit, and
both outputs reach ground-truth."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from orchestrator.datasets import GROUND_TRUTH, init_bare
from orchestrator.datasets.branches import BranchConflict
from orchestrator.datasets.upkeep import remove_stale_lanes
from orchestrator.errors import BadRequest
from tests.unit.test_datasets_repo import TRAILERS, node, parents, tree_files, write


@pytest.fixture
def master(tmp_path: Path) -> Path:
    path, _ = init_bare(tmp_path / "fed", "ds")
    return path


def test_two_runs_side_by_side_both_reach_the_branch_and_ground_truth(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    shared, parent = repo.prepare_worktree("step-n1")  # the first run holds the branch's folder
    lane, lane_parent = repo.prepare_worktree("step-n1", lane="run2")  # the second takes its own
    assert lane != shared and lane_parent == parent and lane.parent.name == "run2"
    write(shared, {"run1.txt": "one\n"})
    write(lane, {"run2.txt": "two\n"})
    # Both commit on the same parent: a commit moves nothing, only a landed vote moves the branch.
    second, changed = repo.commit_worktree("step-n1", lane_parent, "run2", TRAILERS, lane="run2")
    assert changed and parents(repo, second) == [parent]
    first, changed = repo.commit_worktree("step-n1", parent, "run1", TRAILERS)
    assert changed and parents(repo, first) == [parent]
    repo.drop_lane("step-n1", "run2")
    assert not lane.exists() and not (repo.git_dir / "mao-index" / ".lane-run2-step-n1").exists()
    # The second votes first; the first finds the branch moved and is merged with its tip.
    assert repo.merge_and_push("step-n1", "merge", TRAILERS, commit=second).merged
    assert repo.merge_and_push("step-n1", "merge", TRAILERS, commit=first).merged
    tip = repo._rev("refs/heads/step-n1")
    assert tip is not None and parents(repo, tip) == [second, first]
    check = tmp_path / "check"
    repo.snapshot(check, GROUND_TRUTH)
    assert tree_files(check) == {"run1.txt": "one\n", "run2.txt": "two\n"}


def test_the_same_path_changed_by_both_is_a_conflict_that_keeps_the_commit(
    tmp_path: Path, master: Path
) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    shared, parent = repo.prepare_worktree("step-n1")
    lane, _ = repo.prepare_worktree("step-n1", lane="run2")
    write(shared, {"now": "first\n"})
    write(lane, {"now": "second\n", "extra": "x\n"})
    tip, _ = repo.commit_worktree("step-n1", parent, "run1", TRAILERS)
    repo.merge_and_push("step-n1", "merge", TRAILERS, commit=tip)  # its vote lands
    with pytest.raises(BranchConflict) as raised:
        repo.commit_worktree("step-n1", parent, "run2", TRAILERS, lane="run2")
    assert raised.value.paths == ["now"]
    assert repo._rev("refs/heads/step-n1") == tip  # the branch is untouched
    kept = git.Repo(repo.git_dir).git.rev_parse(f"refs/mao/unmerged/step-n1/{raised.value.commit}")
    assert kept == raised.value.commit  # never lost


def test_a_conflict_found_at_the_vote_keeps_the_commit_and_the_branch(tmp_path: Path, master: Path) -> None:
    """Both committed before either voted: the later vote finds the clash, before pushing anything."""
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    shared, parent = repo.prepare_worktree("step-n1")
    lane, _ = repo.prepare_worktree("step-n1", lane="run2")
    write(shared, {"now": "first\n"})
    write(lane, {"now": "second\n"})
    first, _ = repo.commit_worktree("step-n1", parent, "run1", TRAILERS)
    second, _ = repo.commit_worktree("step-n1", parent, "run2", TRAILERS, lane="run2")
    repo.merge_and_push("step-n1", "merge", TRAILERS, commit=first)
    with pytest.raises(BranchConflict) as raised:
        repo.merge_and_push("step-n1", "merge", TRAILERS, commit=second)
    assert raised.value.paths == ["now"] and raised.value.commit == second
    assert repo._rev("refs/heads/step-n1") == first


def test_a_run_that_changed_nothing_leaves_the_moved_branch_alone(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    shared, parent = repo.prepare_worktree("step-n1")
    repo.prepare_worktree("step-n1", lane="run2")
    write(shared, {"a": "1\n"})
    tip, _ = repo.commit_worktree("step-n1", parent, "run1", TRAILERS)
    repo.merge_and_push("step-n1", "merge", TRAILERS, commit=tip)
    assert repo.commit_worktree("step-n1", parent, "run2", TRAILERS, lane="run2") == (tip, False)


@pytest.mark.parametrize("lane", ["../x", ".hidden", "a/b", ""])
def test_bad_lane_names_are_refused(tmp_path: Path, master: Path, lane: str) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    with pytest.raises((BadRequest, ValueError)):
        repo.prepare_worktree("step-n1", lane=lane)


def test_lanes_a_killed_process_left_are_removed_at_start(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    shared, _ = repo.prepare_worktree("step-n1")
    lane, _ = repo.prepare_worktree("step-n1", lane="run9")
    write(lane, {"half": "written\n"})
    assert remove_stale_lanes(tmp_path / "node1") == [lane.parent]
    assert not lane.parent.exists() and shared.is_dir()
    assert not list((repo.git_dir / "mao-index").glob(".lane-*"))
    assert (repo.git_dir / "mao-index" / "step-n1").is_file()
