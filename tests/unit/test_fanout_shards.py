"""Fan-out's files side: globs, listing, splitting, shard input folders, combining outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.domain.fanout import glob_problem
from orchestrator.runs.fanout.files import (
    Shard,
    ShardCollision,
    combine,
    glob_matches,
    list_files,
    materialise,
    split,
)


def write(root: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


# -- globs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["*.csv", "**/*.json", "raw/2024-*/day?.txt", "[ab]*", "**"])
def test_valid_globs(pattern: str) -> None:
    assert glob_problem(pattern) is None


@pytest.mark.parametrize(
    "pattern", ["", "/etc/*", "../*", "a/../../b", "./x", "a//b", "a\\b", "a\nb", "x" * 600, 3]
)
def test_globs_that_escape_or_are_malformed_are_refused(pattern: object) -> None:
    assert glob_problem(pattern)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.csv", "a.csv", True),
        ("*.csv", "sub/a.csv", False),  # * stays in one segment
        ("**/*.csv", "a.csv", True),  # ** matches zero folders
        ("**/*.csv", "x/y/a.csv", True),
        ("raw/**", "raw/a/b", True),
        ("raw/**", "other/a", False),
        ("d?y.txt", "day.txt", True),
        ("d?y.txt", "d/y.txt", False),
        ("[ab]*", "beta", True),
        ("[ab]*", "gamma", False),
        ("*", ".hidden", True),
        ("**/**/*.txt", "a/b.txt", True),
    ],
)
def test_glob_matching(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


# -- listing and splitting -------------------------------------------------------------------------


def test_list_files_is_sorted_relative_and_ignores_folders(tmp_path: Path) -> None:
    write(tmp_path, {"b.csv": "", "a.csv": "", "a-b.csv": "", "sub/c.csv": "", "sub/d.txt": "", "e.txt": ""})
    (tmp_path / "empty.csv").mkdir()  # a folder whose name matches is not a file
    assert list_files(tmp_path, "*.csv") == ["a-b.csv", "a.csv", "b.csv"]
    assert list_files(tmp_path, "**/*.csv") == ["a-b.csv", "a.csv", "b.csv", "sub/c.csv"]
    assert list_files(tmp_path, "nothing*") == []


def test_list_files_never_follows_symlinks_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, {"secret.csv": "s"})
    root = tmp_path / "root"
    write(root, {"a.csv": ""})
    (root / "link").symlink_to(outside)  # a link to a folder: one entry, not walked
    (root / "l.csv").symlink_to(outside / "secret.csv")
    assert list_files(root, "**/*.csv") == ["a.csv", "l.csv"]
    assert list_files(root, "link") == ["link"]


def test_list_files_refuses_a_bad_glob(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'..'"):
        list_files(tmp_path, "../*")


def test_split_makes_numbered_shards_of_split_size() -> None:
    files = [f"f{n:02}" for n in range(12)]
    shards = split(files, 5)
    assert [s.index for s in shards] == [1, 2, 3]
    assert {s.count for s in shards} == {3}
    assert [len(s.files) for s in shards] == [5, 5, 2]
    assert sum((list(s.files) for s in shards), []) == files
    assert split([], 5) == []
    with pytest.raises(ValueError):
        split(files, 0)


def test_materialise_holds_only_the_shards_files(tmp_path: Path) -> None:
    root = tmp_path / "snapshot"
    write(root, {"a.csv": "A", "sub/b.csv": "B", "c.csv": "C"})
    (root / "l.csv").symlink_to("a.csv")
    shard = Shard(index=1, count=2, files=("l.csv", "sub/b.csv"))
    dest = materialise(root, shard, tmp_path / "shard-1")
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir())
    assert found == ["l.csv", "sub/b.csv"]
    assert (dest / "sub/b.csv").read_text() == "B"
    assert os.path.samefile(dest / "sub/b.csv", root / "sub/b.csv")  # a hard link, no copy
    assert os.readlink(dest / "l.csv") == "a.csv"
    with pytest.raises(FileExistsError):
        materialise(root, shard, dest)  # never into a folder that already exists


# -- combining ---------------------------------------------------------------------------------------


def test_combine_moves_every_shards_output_over_the_branch(tmp_path: Path) -> None:
    dest = tmp_path / "work"
    write(dest, {"old.txt": "kept", "out/1.txt": "stale", "keep/x": "x"})
    one, two = tmp_path / "s1", tmp_path / "s2"
    write(one, {"out/1.txt": "new 1", "deep/a/b.txt": "b"})
    write(two, {"out/2.txt": "new 2"})
    (two / "link").symlink_to("/etc/passwd")  # moved as a link, never followed
    combined = combine([(1, one), (2, two)], dest)
    assert combined.files == 4 and combined.skipped == ()
    assert (dest / "old.txt").read_text() == "kept"  # shards add or replace; they do not delete
    assert (dest / "out/1.txt").read_text() == "new 1"
    assert (dest / "out/2.txt").read_text() == "new 2"
    assert (dest / "deep/a/b.txt").read_text() == "b"
    assert os.readlink(dest / "link") == "/etc/passwd"


def test_two_shards_writing_one_path_fail_before_anything_moves(tmp_path: Path) -> None:
    dest = tmp_path / "work"
    dest.mkdir()
    one, two, three = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    write(one, {"summary.txt": "1", "a/x": "1", "only-1": ""})
    write(two, {"summary.txt": "2", "a": "file where shard 1 has a folder"})
    write(three, {"summary.txt": "3"})
    with pytest.raises(ShardCollision) as caught:
        combine([(1, one), (2, two), (3, three)], dest)
    assert caught.value.paths == {"a": (1, 2), "summary.txt": (1, 2, 3)}
    assert "summary.txt (shards 1, 2, 3)" in caught.value.message
    assert list(dest.iterdir()) == []  # nothing moved


def test_combine_never_writes_through_a_link_in_the_work_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "work"
    dest.mkdir()
    (dest / "out").symlink_to(outside)  # the branch holds a link to a folder elsewhere
    (dest / "f").symlink_to(outside / "target")
    shard = tmp_path / "s1"
    write(shard, {"out/x.txt": "x", "f": "plain"})
    combine([(1, shard)], dest)
    assert list(outside.iterdir()) == []
    assert (dest / "out").is_dir() and not (dest / "out").is_symlink()
    assert (dest / "out/x.txt").read_text() == "x"
    assert not (dest / "f").is_symlink() and (dest / "f").read_text() == "plain"


def test_a_shard_file_replaces_a_branch_folder_and_a_folder_replaces_a_file(tmp_path: Path) -> None:
    dest = tmp_path / "work"
    write(dest, {"x/old": "", "y": "file"})
    shard = tmp_path / "s1"
    write(shard, {"x": "now a file", "y/z": "now a folder"})
    combine([(1, shard)], dest)
    assert (dest / "x").read_text() == "now a file"
    assert (dest / "y/z").read_text() == "now a folder"


def test_special_files_and_git_metadata_are_left_out(tmp_path: Path) -> None:
    dest = tmp_path / "work"
    dest.mkdir()
    shard = tmp_path / "s1"
    write(shard, {"a.txt": "a", ".git/config": "[core]", "sub/.GIT": "x"})
    os.mkfifo(shard / "pipe")
    combined = combine([(1, shard)], dest)
    assert combined.files == 1
    assert sorted(combined.skipped) == [
        ".git (shard 1: git metadata)",
        "pipe (shard 1: a FIFO)",
        "sub/.GIT (shard 1: git metadata)",
    ]
    assert sorted(p.name for p in dest.rglob("*")) == ["a.txt"]


def test_combine_refuses_a_destination_that_is_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "work").symlink_to(real)
    with pytest.raises(ValueError):
        combine([], tmp_path / "work")
