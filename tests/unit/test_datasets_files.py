"""Single files of a dataset's branches without a work folder: commit_files and read_file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.datasets import DatasetRepo, init_bare
from orchestrator.datasets.files import commit_files, path_problem, pushed_tip, read_blob, read_file
from orchestrator.errors import BadRequest

TRAILERS = {"MAO-Instance": "node1"}


@pytest.fixture
def repo(tmp_path: Path) -> DatasetRepo:
    master, _ = init_bare(tmp_path / "masters", "ds")
    repo = DatasetRepo(tmp_path / "node1", "ds", str(master), git_name="Node 1", git_email="n1@example.org")
    repo.sync()
    repo.ensure_ground_truth()
    return repo


def test_files_are_added_once_and_replays_change_nothing(repo: DatasetRepo) -> None:
    first = {"a/b@5.json": b'{"v": 1}\n', "c@6.json": b"no newline"}
    commit, changed = commit_files(repo, "raw-node1", first, "two entries", TRAILERS)
    assert changed
    again, changed = commit_files(repo, "raw-node1", first, "the same again", TRAILERS)
    assert (again, changed) == (commit, False)
    later, changed = commit_files(repo, "raw-node1", {"a/b@9.json": b"{}"}, "one more", TRAILERS)
    assert changed
    # The branch keeps every file: the new commit builds on the previous tree.
    for path, content in {**first, "a/b@9.json": b"{}"}.items():
        copy = read_file(repo, later, path, inline_limit=1024)
        assert copy is not None and copy.content == content
        assert copy.sha256 == hashlib.sha256(content).hexdigest() and copy.size == len(content)


def test_the_branch_is_pushed_by_merging_and_read_by_its_pushed_tip(repo: DatasetRepo) -> None:
    commit, _ = commit_files(repo, "raw-node1", {"x.txt": b"1\n2\n"}, "x", TRAILERS)
    assert pushed_tip(repo, "raw-node1") is None
    repo.merge_and_push("raw-node1", "Merge raw-node1", TRAILERS)
    assert pushed_tip(repo, "raw-node1") == commit
    assert read_blob(repo, commit, "x.txt") == b"1\n2\n"


def test_large_files_are_hashed_but_not_inlined_and_missing_ones_are_none(repo: DatasetRepo) -> None:
    big = bytes(range(256)) * 400
    commit, _ = commit_files(repo, "b", {"big.bin": big, "dir/small": b"s"}, "big", TRAILERS)
    copy = read_file(repo, commit, "big.bin", inline_limit=1024)
    assert copy is not None and copy.content is None and copy.size == len(big)
    assert copy.sha256 == hashlib.sha256(big).hexdigest()
    assert read_blob(repo, commit, "big.bin") == big
    assert read_file(repo, commit, "nope.txt", 1024) is None
    assert read_file(repo, commit, "dir", 1024) is None  # a folder is not a file


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "-rf", "a/../b", "../x", "a//b", "./a", "a/.git/config", "a\\b", "a\x00"]
)
def test_paths_outside_the_dataset_are_refused(repo: DatasetRepo, path: str) -> None:
    assert path_problem(path) is not None
    with pytest.raises(BadRequest):
        commit_files(repo, "b", {path: b"x"}, "bad", TRAILERS)
