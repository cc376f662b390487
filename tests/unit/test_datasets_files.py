"""Single files of a dataset's branches without a work folder: commit_files and read_file."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from orchestrator.datasets import DatasetRepo, RepoSettings, init_bare
from orchestrator.datasets.files import commit_files, path_problem, pushed_tip, read_blob, read_file
from orchestrator.errors import BadRequest, GitError, PayloadTooLarge

TRAILERS = {"MAO-Instance": "node1"}


@pytest.fixture
def repo(tmp_path: Path) -> DatasetRepo:
    master, _ = init_bare(tmp_path / "masters", "ds")
    repo = DatasetRepo(
        tmp_path / "node1",
        "ds",
        str(master),
        RepoSettings(git_name="Node 1", git_email="n1@example.org"),
    )
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
    assert read_blob(repo, commit, "x.txt", max_bytes=4) == b"1\n2\n"


def test_large_files_are_hashed_but_not_inlined_and_missing_ones_are_none(repo: DatasetRepo) -> None:
    big = bytes(range(256)) * 400
    commit, _ = commit_files(repo, "b", {"big.bin": big, "dir/small": b"s"}, "big", TRAILERS)
    copy = read_file(repo, commit, "big.bin", inline_limit=1024)
    assert copy is not None and copy.content is None and copy.size == len(big)
    assert copy.sha256 == hashlib.sha256(big).hexdigest()
    assert read_blob(repo, commit, "big.bin", max_bytes=len(big)) == big
    assert read_file(repo, commit, "nope.txt", 1024) is None
    assert read_file(repo, commit, "dir", 1024) is None  # a folder is not a file


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "-rf", "a/../b", "../x", "a//b", "./a", "a/.git/config", "a\\b", "a\x00"]
)
def test_paths_outside_the_dataset_are_refused(repo: DatasetRepo, path: str) -> None:
    assert path_problem(path) is not None
    with pytest.raises(BadRequest):
        commit_files(repo, "b", {path: b"x"}, "bad", TRAILERS)


def test_a_file_over_the_limit_is_hashed_as_it_streams_not_held(repo: DatasetRepo) -> None:
    big = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB
    commit, _ = commit_files(repo, "b", {"big.bin": big}, "big", TRAILERS)
    tracemalloc.start()
    try:
        copy = read_file(repo, commit, "big.bin", inline_limit=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert copy is not None and copy.content is None and copy.size == len(big)
    assert copy.sha256 == hashlib.sha256(big).hexdigest()
    assert peak < 3 * 1024 * 1024  # chunks of 1 MiB, never the whole file


def test_read_blob_checks_the_real_size(repo: DatasetRepo) -> None:
    commit, _ = commit_files(repo, "b", {"f.txt": b"0123456789"}, "f", TRAILERS)
    assert read_blob(repo, commit, "f.txt", max_bytes=10) == b"0123456789"
    with pytest.raises(PayloadTooLarge) as refused:
        read_blob(repo, commit, "f.txt", max_bytes=9)
    assert refused.value.extra == {"size": 10, "limit": 9}


def test_a_malformed_commit_is_a_bad_request_and_odd_paths_are_read_exactly(repo: DatasetRepo) -> None:
    commit, _ = commit_files(repo, "b", {"my blob 5": b"spaces", "dir/x": b"x"}, "odd", TRAILERS)
    for bad in ("HEAD", "None", commit[:12], commit + "\n", "g" * 40):
        with pytest.raises(BadRequest):
            read_file(repo, bad, "my blob 5", 1024)
        with pytest.raises(BadRequest):
            read_blob(repo, bad, "my blob 5", 1024)
    copy = read_file(repo, commit, "my blob 5", 1024)
    assert copy is not None and copy.content == b"spaces"
    # git answers "<commit>:<path> missing"; a path with spaces must not pass for a header.
    for missing in ("a blob 5", "my blob", "x blob missing", "dir/x/y"):
        assert read_file(repo, commit, missing, 1024) is None
    assert read_file(repo, "0" * 40, "my blob 5", 1024) is None  # a commit this repository lacks


def test_git_failing_is_a_git_error(repo: DatasetRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    commit, _ = commit_files(repo, "b", {"f.txt": b"x"}, "f", TRAILERS)
    runner = repo._runner()
    monkeypatch.setattr(type(runner), "GIT_PYTHON_GIT_EXECUTABLE", "false")  # exits at once, says nothing
    with pytest.raises(GitError, match="could not read 'f.txt'"):
        read_file(repo, commit, "f.txt", 1024)
    monkeypatch.setattr(type(runner), "GIT_PYTHON_GIT_EXECUTABLE", "/nonexistent/git")
    with pytest.raises(GitError, match="could not read 'f.txt'"):
        read_blob(repo, commit, "f.txt", 1024)
