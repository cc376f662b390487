"""DatasetRepo against real git repositories in tmp_path: each data dir plays one federation node."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import git
import pytest

from orchestrator.datasets import GROUND_TRUTH, DatasetRepo, RepoSettings, init_bare
from orchestrator.errors import BadRequest, GitError

TRAILERS = {"Mao-Pipeline": "weather", "Mao-Step": "fetch", "Mao-Instance": "node1", "Mao-Run": "42"}


def node(tmp_path: Path, n: int, master: Path | str, name: str = "ds") -> DatasetRepo:
    return DatasetRepo(
        tmp_path / f"node{n}",
        name,
        str(master),
        RepoSettings(git_name=f"Node {n}", git_email=f"node{n}@example.org"),
    )


def remote_rev(master: Path, ref: str) -> str | None:
    status, out, _ = git.Git(str(master)).execute(
        ["git", "--git-dir", str(master), "rev-parse", "--verify", "--quiet", ref],
        with_extended_output=True,
        with_exceptions=False,
    )
    return out.strip() if status == 0 else None


def parents(repo: DatasetRepo, commit: str) -> list[str]:
    return git.Repo(repo.git_dir).git.log("-1", "--format=%P", commit).split()


def write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tree_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def step(repo: DatasetRepo, branch: str, files: dict[str, str], remove: tuple[str, ...] = ()) -> str:
    """One tool run: prepare the folder, write output, commit. Returns the new commit."""
    folder, parent = repo.prepare_worktree(branch)
    write(folder, files)
    for rel in remove:
        (folder / rel).unlink()
    commit, changed = repo.commit_worktree(branch, parent, f"{branch} output", TRAILERS)
    assert changed
    return commit


@pytest.fixture
def master(tmp_path: Path) -> Path:
    path, created = init_bare(tmp_path / "fed", "ds")
    assert created
    return path


@pytest.fixture
def main_master(tmp_path: Path) -> tuple[Path, str]:
    """A master that has only a `main` branch with one file."""
    src = git.Repo.init(tmp_path / "src", initial_branch="main")
    (tmp_path / "src" / "readme.txt").write_text("hello\n")
    src.index.add(["readme.txt"])
    actor = git.Actor("Someone", "someone@example.org")
    commit = src.index.commit("first", author=actor, committer=actor)
    bare = git.Repo.init(tmp_path / "main.git", bare=True)
    src.git.push(str(bare.git_dir), "main:refs/heads/main")
    src.close()
    bare.close()
    return tmp_path / "main.git", commit.hexsha


# -- init_bare / ensure_ground_truth -------------------------------------------------------------


def test_init_bare_is_idempotent(tmp_path: Path) -> None:
    path, created = init_bare(tmp_path, "things")
    assert created and path == tmp_path / "repos" / "things.git"
    assert git.Repo(path).bare
    again, created_again = init_bare(tmp_path, "things")
    assert again == path and not created_again
    with pytest.raises(BadRequest):
        init_bare(tmp_path, "../escape")


def test_ensure_ground_truth_on_empty_master(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    assert repo.remote_branches() == []
    tip = repo.ensure_ground_truth()
    assert remote_rev(master, "refs/heads/ground-truth") == tip
    assert repo.remote_branches() == [GROUND_TRUTH]
    [entry] = repo.log()
    assert entry["subject"] == "Initialise ground-truth" and entry["author"] == "Node 1"
    assert repo.ensure_ground_truth() == tip
    assert not (repo.git_dir / "hooks").exists()  # created without templates


def test_ensure_ground_truth_from_main(tmp_path: Path, main_master: tuple[Path, str]) -> None:
    path, main_commit = main_master
    repo = node(tmp_path, 1, path)
    repo.sync()
    assert repo.ensure_ground_truth() == main_commit
    assert remote_rev(path, "refs/heads/ground-truth") == main_commit
    assert repo.remote_branches() == [GROUND_TRUTH, "main"]


def test_ensure_ground_truth_when_it_exists(tmp_path: Path, master: Path) -> None:
    first = node(tmp_path, 1, master)
    first.sync()
    tip = first.ensure_ground_truth()
    second = node(tmp_path, 2, master)
    second.sync()
    assert second.ensure_ground_truth() == tip


def test_racing_ensure_ground_truth_agrees(tmp_path: Path, master: Path) -> None:
    a, b = node(tmp_path, 1, master), node(tmp_path, 2, master)
    a.sync()
    b.sync()  # both saw an empty master
    tip_a = a.ensure_ground_truth()
    tip_b = b.ensure_ground_truth()  # its push is rejected; it fetches and accepts a's
    assert tip_a == tip_b == remote_rev(master, "refs/heads/ground-truth")


def test_concurrent_ensure_ground_truth_in_threads(tmp_path: Path, master: Path) -> None:
    repos = [node(tmp_path, n, master) for n in range(4)]

    def go(repo: DatasetRepo) -> str:
        repo.sync()
        return repo.ensure_ground_truth()

    with ThreadPoolExecutor(len(repos)) as pool:
        tips = list(pool.map(go, repos))
    assert set(tips) == {remote_rev(master, "refs/heads/ground-truth")}


# -- snapshot / prepare_worktree / commit_worktree -----------------------------------------------


def test_snapshot_exports_files_without_git(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    commit = step(repo, "fetch-node1", {"a.txt": "A", "deep/er/b.txt": "B"})
    result = repo.merge_and_push("fetch-node1", "Merge fetch-node1", TRAILERS, commit=commit)
    dest = tmp_path / "snap"
    assert repo.snapshot(dest) == result.commit
    assert tree_files(dest) == {"a.txt": "A", "deep/er/b.txt": "B"}
    assert not (dest / ".git").exists()
    assert not list((repo.git_dir / "mao-index").glob(".snapshot-*"))  # temporary index removed
    with pytest.raises(ValueError):
        repo.snapshot(dest)  # not empty


def test_prepare_worktree_from_ground_truth_then_branch(
    tmp_path: Path, main_master: tuple[Path, str]
) -> None:
    path, main_commit = main_master
    repo = node(tmp_path, 1, path)
    repo.sync()
    repo.ensure_ground_truth()
    folder, parent = repo.prepare_worktree("fetch-node1")
    assert folder == tmp_path / "node1" / "work" / "ds" / "fetch-node1"
    assert parent == main_commit
    assert tree_files(folder) == {"readme.txt": "hello\n"}
    assert not (folder / ".git").exists()

    write(folder, {"out/data.csv": "1,2\n"})
    commit, changed = repo.commit_worktree("fetch-node1", parent, "fetch output", TRAILERS)
    assert changed and parents(repo, commit) == [main_commit]
    # Not voted yet: the branch has not moved, the next run starts where this one did.
    assert repo.prepare_worktree("fetch-node1")[1] == main_commit
    write(folder, {"out/data.csv": "1,2\n"})
    commit, _ = repo.commit_worktree("fetch-node1", parent, "fetch output", TRAILERS)

    repo.push_branch("fetch-node1", commit)  # the vote landed: the branch moves
    folder, parent = repo.prepare_worktree("fetch-node1")
    assert parent == commit
    assert tree_files(folder) == {"readme.txt": "hello\n", "out/data.csv": "1,2\n"}


def test_prepare_worktree_wipes_leftovers(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    commit = step(repo, "b-n1", {"keep.txt": "keep", "sub/x.txt": "x"})
    repo.push_branch("b-n1", commit)
    # A failed run: handed the folder, its tool left modified, deleted, new files, a stray
    # repository and nested .git metadata.
    folder, _ = repo.prepare_worktree("b-n1")
    (folder / "keep.txt").write_text("garbage")
    (folder / "sub" / "x.txt").unlink()
    write(folder, {"new/junk.bin": "junk", ".gitignore": "*\n", "sub/.git/config": "x", "ign.log": "l"})
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/evil\n")
    folder2, parent = repo.prepare_worktree("b-n1")
    assert (folder2, parent) == (folder, commit)
    assert tree_files(folder) == {"keep.txt": "keep", "sub/x.txt": "x"}
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt", "sub"]


def test_prepare_worktree_recovers_from_damaged_index(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    repo.push_branch("b-n1", step(repo, "b-n1", {"f.txt": "f"}))
    (repo.git_dir / "mao-index" / "b-n1").write_bytes(b"not an index")
    folder, _ = repo.prepare_worktree("b-n1")
    assert tree_files(folder) == {"f.txt": "f"}


def test_commit_worktree_trailers_deletions_and_no_change(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    gt = repo.ensure_ground_truth()
    folder, parent = repo.prepare_worktree("s-n1")
    write(folder, {"a/b/c/deep.txt": "deep", "top.txt": "top", ".gitignore": "*.log\n", "run.log": "log"})
    (folder / "nested").mkdir()
    (folder / "nested" / ".git").write_text("gitdir: /elsewhere\n")  # would become a submodule link
    c1, changed = repo.commit_worktree("s-n1", parent, "Step s\n\nbody line", TRAILERS)
    assert changed and parent == gt
    assert not repo.has_local_branch("s-n1")  # only a landed vote moves the branch
    repo.push_branch("s-n1", c1)
    lrepo = git.Repo(repo.git_dir)
    assert lrepo.git.rev_parse("refs/heads/s-n1") == c1
    assert lrepo.git.log("-1", "--format=%(trailers)", c1).strip().splitlines() == [
        f"{k}: {v}" for k, v in TRAILERS.items()
    ]
    assert lrepo.git.log("-1", "--format=%B", c1).startswith("Step s\n\nbody line\n\nMao-Pipeline: weather")
    assert lrepo.git.log("-1", "--format=%an <%ae>|%cn <%ce>", c1) == (
        "Node 1 <node1@example.org>|Node 1 <node1@example.org>"
    )
    files = lrepo.git.ls_tree("-r", "--name-only", c1).splitlines()
    assert sorted(files) == [".gitignore", "a/b/c/deep.txt", "run.log", "top.txt"]

    # Nothing changed: no commit, same parent.
    folder, parent = repo.prepare_worktree("s-n1")
    assert repo.commit_worktree("s-n1", parent, "again", TRAILERS) == (c1, False)
    assert lrepo.git.rev_parse("refs/heads/s-n1") == c1

    # Deletions, including a whole nested folder.
    folder, parent = repo.prepare_worktree("s-n1")
    (folder / "top.txt").unlink()
    (folder / "a" / "b" / "c" / "deep.txt").unlink()
    c2, changed = repo.commit_worktree("s-n1", parent, "delete", {})
    assert changed and parents(repo, c2) == [c1]
    assert lrepo.git.ls_tree("-r", "--name-only", c2).splitlines() == [".gitignore", "run.log"]
    assert lrepo.git.log("-1", "--format=%B", c2).strip() == "delete"


def test_commit_worktree_without_change_returns_the_parent(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    gt = repo.ensure_ground_truth()
    _, parent = repo.prepare_worktree("idle-n1")
    assert repo.commit_worktree("idle-n1", parent, "nothing", TRAILERS) == (gt, False)
    # Already contained in ground-truth: nothing to merge, but the branch is published and set.
    result = repo.merge_and_push("idle-n1", "Merge idle-n1", TRAILERS, commit=gt)
    assert (result.merged, result.commit, result.conflicts) == (False, gt, [])
    assert remote_rev(master, "refs/heads/idle-n1") == gt
    assert git.Repo(repo.git_dir).git.rev_parse("refs/heads/idle-n1") == gt


def test_commit_worktree_rejects_bad_trailers(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    repo.ensure_ground_truth()
    folder, parent = repo.prepare_worktree("t-n1")
    write(folder, {"x": "x"})
    with pytest.raises(BadRequest):
        repo.commit_worktree("t-n1", parent, "m", {"Key": "line\nInjected: yes"})
    with pytest.raises(BadRequest):
        repo.commit_worktree("t-n1", parent, "m", {"Bad Key": "v"})
    with pytest.raises(ValueError):
        repo.commit_worktree("t-n1", "--upload-pack=x", "m", {})


# -- merge_and_push ------------------------------------------------------------------------------


def test_first_vote_creates_a_merge_commit(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    gt = repo.ensure_ground_truth()
    commit = step(repo, "fetch-n1", {"data.txt": "1"})
    result = repo.merge_and_push("fetch-n1", "Merge fetch-n1 into ground-truth", TRAILERS, commit=commit)
    assert result.merged and result.conflicts == []
    assert parents(repo, result.commit) == [gt, commit]  # a merge commit although gt could fast-forward
    assert remote_rev(master, "refs/heads/ground-truth") == result.commit
    assert remote_rev(master, "refs/heads/fetch-n1") == commit
    top = repo.log(max_count=1)[0]
    assert top["commit"] == result.commit and top["trailers"] == TRAILERS
    assert top["subject"] == "Merge fetch-n1 into ground-truth"
    # Again: the branch is now contained, nothing to do.
    again = repo.merge_and_push("fetch-n1", "Merge fetch-n1 into ground-truth", TRAILERS)
    assert (again.merged, again.commit) == (False, result.commit)


def test_two_nodes_different_files_both_merge(tmp_path: Path, master: Path) -> None:
    a, b = node(tmp_path, 1, master), node(tmp_path, 2, master)
    for repo in (a, b):
        repo.sync()
        repo.ensure_ground_truth()
    ca = step(a, "fetch-n1", {"n1/data.txt": "from 1"})
    cb = step(b, "fetch-n2", {"n2/data.txt": "from 2"})
    ra = a.merge_and_push("fetch-n1", "Merge fetch-n1", TRAILERS, commit=ca)
    rb = b.merge_and_push("fetch-n2", "Merge fetch-n2", TRAILERS, commit=cb)  # b's own fetch sees a's merge
    assert ra.merged and rb.merged
    assert parents(b, rb.commit) == [ra.commit, cb]
    a.sync()
    subjects = [entry["subject"] for entry in a.log()]
    assert subjects[:2] == ["Merge fetch-n2", "Merge fetch-n1"]
    assert {ca, cb} <= {entry["commit"] for entry in a.log(max_count=10)}
    dest = tmp_path / "snap"
    a.snapshot(dest)
    assert tree_files(dest) == {"n1/data.txt": "from 1", "n2/data.txt": "from 2"}


def test_conflict_leaves_ground_truth_and_pushes_branch(tmp_path: Path, master: Path) -> None:
    a, b = node(tmp_path, 1, master), node(tmp_path, 2, master)
    for repo in (a, b):
        repo.sync()
        repo.ensure_ground_truth()
    ca = step(a, "fetch-n1", {"same.txt": "one", "only-a.txt": "a"})
    cb = step(b, "fetch-n2", {"same.txt": "two", "other.txt": "b"})
    ra = a.merge_and_push("fetch-n1", "Merge fetch-n1", TRAILERS, commit=ca)
    assert ra.merged
    rb = b.merge_and_push("fetch-n2", "Merge fetch-n2", TRAILERS, commit=cb)
    assert (rb.merged, rb.commit, rb.conflicts) == (False, ra.commit, ["same.txt"])
    assert remote_rev(master, "refs/heads/ground-truth") == ra.commit
    assert remote_rev(master, "refs/heads/fetch-n2") == cb


def test_merge_uses_its_own_fetch_when_local_state_is_stale(tmp_path: Path, master: Path) -> None:
    a, b = node(tmp_path, 1, master), node(tmp_path, 2, master)
    for repo in (a, b):
        repo.sync()
        repo.ensure_ground_truth()
    ca = step(a, "x-n1", {"a.txt": "a"})
    cb = step(b, "x-n2", {"b.txt": "b"})  # b's view of ground-truth is from before a's merge
    ra = a.merge_and_push("x-n1", "Merge x-n1", TRAILERS, commit=ca)
    rb = b.merge_and_push("x-n2", "Merge x-n2", TRAILERS, commit=cb)  # no explicit sync before
    assert rb.merged and parents(b, rb.commit)[0] == ra.commit
    assert remote_rev(master, "refs/heads/ground-truth") == rb.commit


def test_push_branch_only(tmp_path: Path, master: Path) -> None:
    repo = node(tmp_path, 1, master)
    repo.sync()
    gt = repo.ensure_ground_truth()
    commit = step(repo, "p-n1", {"f": "f"})
    assert repo.push_branch("p-n1", commit) == commit
    assert remote_rev(master, "refs/heads/p-n1") == commit
    assert remote_rev(master, "refs/heads/ground-truth") == gt
    assert "p-n1" in repo.remote_branches()


def test_rejected_push_raises_and_pushes_nothing(tmp_path: Path, master: Path) -> None:
    """Someone ignores the federation lock: our atomic push fails as a whole."""
    a, b = node(tmp_path, 1, master), node(tmp_path, 2, master)
    for repo in (a, b):
        repo.sync()
        repo.ensure_ground_truth()
    ca = step(a, "r-n1", {"a": "a"})
    cb = step(b, "r-n2", {"b": "b"})
    original_sync = a.sync

    def sync_then_someone_else_merges() -> None:
        original_sync()
        b.merge_and_push("r-n2", "Merge r-n2", TRAILERS, commit=cb)

    a.sync = sync_then_someone_else_merges  # type: ignore[method-assign]
    with pytest.raises(GitError, match="rejected"):
        a.merge_and_push("r-n1", "Merge r-n1", TRAILERS, commit=ca)
    assert remote_rev(master, "refs/heads/r-n1") is None  # atomic: the node branch was not pushed either
    # ... and the local branch did not move: the next run starts from ground-truth, not from ca.
    assert not a.has_local_branch("r-n1")
    assert a.prepare_worktree("r-n1")[1] != ca


# -- failures and validation ---------------------------------------------------------------------


def test_unreachable_master(tmp_path: Path) -> None:
    repo = node(tmp_path, 1, tmp_path / "does-not-exist.git")
    with pytest.raises(GitError) as info:
        repo.sync()
    message = info.value.message
    assert "could not be reached" in message and "'ds'" in message and "does-not-exist.git" in message
    assert info.value.status == 503


def test_network_operations_time_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hang = tmp_path / "hanging-ssh"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(hang))  # honoured: operators configure their key this way
    repo = DatasetRepo(
        tmp_path,
        "ds",
        "ssh://host/x.git",
        RepoSettings(git_name="n", git_email="n@x", network_timeout=0.5),
    )
    started = time.monotonic()
    with pytest.raises(GitError, match=r"could not be reached \(timed out after 0.5s\)"):
        repo.sync()
    assert time.monotonic() - started < 10


def test_placeholder_master_fails_only_when_fetched(tmp_path: Path) -> None:
    repo = node(tmp_path, 1, "git-link")
    with pytest.raises(GitError, match="could not be reached"):
        repo.sync()


def test_credentials_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    repo = DatasetRepo(
        tmp_path,
        "ds",
        "http://user:s3cret@127.0.0.1:9/x.git",
        RepoSettings(git_name="n", git_email="n@x", network_timeout=10),
    )
    with pytest.raises(GitError) as info:
        repo.sync()
    assert "s3cret" not in info.value.message and "could not be reached" in info.value.message


@pytest.mark.parametrize("bad", ["..", "-x", "a..b", "a/b", ".hidden", "x.lock", ""])
def test_bad_names_rejected(tmp_path: Path, master: Path, bad: str) -> None:
    with pytest.raises(BadRequest):
        node(tmp_path, 1, master, name=bad)
    repo = node(tmp_path, 1, master)
    with pytest.raises(BadRequest):
        repo.prepare_worktree(bad)
    with pytest.raises(BadRequest):
        repo.commit_worktree(bad, "0" * 40, "m", {})
    with pytest.raises(BadRequest):
        repo.merge_and_push(bad, "m", {})


def test_bad_master_rejected(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        node(tmp_path, 1, "ext::sh -c touch% /tmp/pwned")
