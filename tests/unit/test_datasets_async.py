"""The async facade: thread hops and per-dataset serialization."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from orchestrator.datasets import DatasetRepo, Datasets
from orchestrator.errors import BadRequest


@pytest.fixture
def datasets(tmp_path: Path) -> Datasets:
    return Datasets(tmp_path / "node", git_name="Node", git_email="node@example.org")


async def test_runs_on_same_dataset_are_serialized(datasets: Datasets) -> None:
    spans: list[tuple[str, float, float]] = []
    loop_thread = threading.get_ident()

    def slow(tag: str):
        def fn(repo: DatasetRepo) -> str:
            assert threading.get_ident() != loop_thread  # runs in a worker thread
            start = time.monotonic()
            time.sleep(0.1)
            spans.append((tag, start, time.monotonic()))
            return tag

        return fn

    results = await asyncio.gather(
        datasets.run("ds", "/m.git", slow("a")), datasets.run("ds", "/m.git", slow("b"))
    )
    assert results == ["a", "b"]
    (_, _, end_first), (_, start_second, _) = sorted(spans, key=lambda s: s[1])
    assert start_second >= end_first


async def test_runs_on_different_datasets_overlap(datasets: Datasets) -> None:
    both_inside = threading.Barrier(2, timeout=5)

    def fn(repo: DatasetRepo) -> str:
        both_inside.wait()  # deadlocks (times out) if the two were serialized
        return repo.name

    assert await asyncio.gather(datasets.run("one", "/m.git", fn), datasets.run("two", "/m.git", fn)) == [
        "one",
        "two",
    ]


async def test_cancelled_run_keeps_lock_until_thread_ends(datasets: Datasets) -> None:
    events: list[str] = []
    started = threading.Event()

    def first(repo: DatasetRepo) -> None:
        started.set()
        time.sleep(0.2)
        events.append("first done")

    def second(repo: DatasetRepo) -> None:
        events.append("second")

    task = asyncio.create_task(datasets.run("ds", "/m.git", first))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    other = asyncio.create_task(datasets.run("ds", "/m.git", second))
    with pytest.raises(asyncio.CancelledError):
        await task
    await other
    assert events == ["first done", "second"]


async def test_facade_end_to_end(tmp_path: Path, datasets: Datasets) -> None:
    master, created = await datasets.init_bare("ds")
    assert created and (await datasets.init_bare("ds")) == (master, False)
    tip = await datasets.sync("ds", str(master))

    def vote(repo: DatasetRepo):
        folder, parent = repo.prepare_worktree("s-n1")
        (folder / "out.txt").write_text("x")
        commit, _ = repo.commit_worktree("s-n1", parent, "output", {"Mao-Step": "s"})
        return repo.merge_and_push("s-n1", "Merge s-n1", {"Mao-Step": "s"}, commit=commit)

    result = await datasets.run("ds", str(master), vote)
    assert result.merged and result.commit != tip
    assert datasets.repo("ds", str(master)) is datasets.repo("ds", str(master))
    with pytest.raises(BadRequest):
        await datasets.run("../x", str(master), vote)
    datasets.close()
