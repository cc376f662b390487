"""The raw listener on a real local git repository with stand-ins for etcd, voting and SQL: one fetch per
batch, and a clean shutdown whatever the last flush raises."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.datasets import DatasetRepo, RepoSettings, init_bare
from orchestrator.domain.pipeline import Dataset
from orchestrator.gateway.listener import RawListener
from orchestrator.gateway.raw import entry_mac
from orchestrator.merging.voting import Vote

BRANCH = "raw-node1"


class FakeDatasets:
    def __init__(self, repo: DatasetRepo) -> None:
        self.repo = repo

    async def run(self, name: str, master: str, fn: Callable[[DatasetRepo], Any]) -> Any:
        return fn(self.repo)


class FakeVoting:
    def __init__(self, repo: DatasetRepo) -> None:
        self.repo = repo

    async def vote(self, step: Any, dataset: Dataset, branch: str, commit: str, message: str, trailers: Any) -> Vote:
        merged = self.repo.merge_and_push(branch, message, trailers)
        return Vote("merged", merged.commit)


class FakeRegistrations:
    def __init__(self, dataset: Dataset) -> None:
        self.found = dataset

    async def dataset(self, name: str) -> Dataset:
        return self.found


@pytest.fixture
def repo(tmp_path: Path) -> DatasetRepo:
    master, _ = init_bare(tmp_path / "masters", "raw")
    return DatasetRepo(
        tmp_path / "node1",
        "raw",
        str(master),
        RepoSettings(git_name="Node 1", git_email="n1@example.org"),
    )


@pytest.fixture
def listener(repo: DatasetRepo) -> RawListener:
    settings = SimpleNamespace(instance_name="node1", raw_batch_seconds=5, raw_batch_size=100)
    dataset = Dataset(name="raw", master=repo.master, nodes=[BRANCH])
    return RawListener(
        settings,  # type: ignore[arg-type]
        "raw",
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        FakeRegistrations(dataset),  # type: ignore[arg-type]
        FakeDatasets(repo),  # type: ignore[arg-type]
        FakeVoting(repo),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )


def entry(value: int) -> dict[str, Any]:
    return {"value": value, "written_at": "2000-01-01T00:00:00+00:00", "instance": "node1", "by": "admin"}


async def test_one_fetch_per_batch_once_the_branch_exists(
    listener: RawListener, repo: DatasetRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches = 0
    real_fetch = repo.fetch

    def counting_fetch() -> None:
        nonlocal fetches
        fetches += 1
        real_fetch()

    monkeypatch.setattr(repo, "fetch", counting_fetch)
    await listener._commit({5: ("lab/a", entry(1))})  # no local repository yet: sync, then the vote's
    assert fetches == 2
    for revision in (6, 7, 8):
        fetches = 0
        await listener._commit({revision: (f"lab/e{revision}", entry(revision))})
        assert fetches == 1  # the vote's (merge_and_push) only
    listed = repo._out("ls-tree", "-r", "--name-only", "refs/remotes/origin/ground-truth", what="list")
    assert listed.split() == ["lab/a@5.json", "lab/e6@6.json", "lab/e7@7.json", "lab/e8@8.json"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), ValueError("not a name")])
async def test_close_logs_what_the_last_flush_raises_and_returns(
    listener: RawListener, failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    async def flush() -> None:
        raise failure

    listener._flush = flush  # type: ignore[method-assign]
    listener._pending[5] = ("lab/a", entry(1))
    with caplog.at_level(logging.WARNING):
        await listener.close()
    warning = next(r.getMessage() for r in caplog.records if "not committed at shutdown" in r.getMessage())
    assert "1 entries" in warning and str(failure) in warning


def test_only_the_entries_this_instance_acknowledged_are_collected(listener: RawListener) -> None:
    """Any member can put a key under /mao/v1/raw/ naming node1; only what node1's /write marked
    with its own secret goes into its branch (docs/security.md, Members)."""
    secret = b"node1's own"
    listener.secret = secret
    listener._unmarked_until = 10  # entries up to revision 10 may be an older version's
    key = "/mao/v1/raw/lab/x"
    marked = {**entry(1), "mac": entry_mac(secret, key, entry(1))}
    listener._collect(key, marked, 20)
    listener._collect(key, {**entry(2), "mac": entry_mac(b"someone else's", key, entry(2))}, 21)
    listener._collect(key, {**marked, "value": 666}, 22)  # the mark of another value
    listener._collect("/mao/v1/raw/lab/y", marked, 23)  # the mark of another key
    listener._collect(key, entry(3), 24)  # no mark, written after this start
    listener._collect(key, entry(4), 9)  # no mark, from before this start (the upgrade)
    assert sorted(listener._pending) == [9, 20]
