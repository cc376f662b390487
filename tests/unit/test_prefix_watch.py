"""PrefixWatch on a fake etcd: resuming at the last revision, compaction, outages, failing handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.errors import DatabaseUnavailable, EtcdUnavailable
from orchestrator.federation import watch as watch_module
from orchestrator.federation.etcd import HistoryCompacted, KeyValue, WatchEvent
from orchestrator.federation.watch import PrefixWatch


class FakeEtcd:
    """Plays a script: each watch call takes the next step (events to yield, then how it ends)."""

    def __init__(self, steps: list[tuple[list[int], BaseException | None]]) -> None:
        self.steps = steps
        self.lists: list[int] = []
        self.watched_from: list[int] = []
        self.revision = 10

    async def list_with_revision(self, prefix: str) -> tuple[list[KeyValue], int]:
        self.lists.append(self.revision)
        return [KeyValue(prefix + "k", {"v": 1}, self.revision, self.revision, 0)], self.revision

    async def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        self.watched_from.append(start_revision)
        if not self.steps:
            await asyncio.sleep(3600)
        revisions, end = self.steps.pop(0)
        for revision in revisions:
            self.revision = revision
            yield WatchEvent("PUT", prefix + f"k{revision}", {"r": revision}, revision)
        if end is not None:
            raise end


async def run_until(watch: PrefixWatch, done: Any) -> None:
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(200):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the watch did not get there")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def short(delay: float, *args: Any) -> Any:
        return await real_sleep(min(delay, 0.001), *args)

    monkeypatch.setattr(watch_module.asyncio, "sleep", short)


async def test_resumes_at_the_last_revision_and_relists_only_after_compaction() -> None:
    etcd = FakeEtcd(
        [
            ([11, 12], None),  # the stream ends: watch again from 12 (it may hold more events)
            ([12, 13], EtcdUnavailable("gone")),  # an outage: same, after a pause
            ([], HistoryCompacted(20)),  # compacted: list again
            ([21], None),
        ]
    )
    seen: list[int] = []
    listed: list[int] = []

    async def on_list(values: list[KeyValue], revision: int) -> None:
        listed.append(revision)

    async def on_event(event: WatchEvent) -> None:
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=on_list, on_event=on_event, what="test")  # type: ignore[arg-type]
    await run_until(watch, lambda: 21 in seen)
    assert listed == [10, 13]
    assert etcd.watched_from == [11, 12, 13, 14]
    assert seen == [11, 12, 12, 13, 21]


async def test_a_resumed_watch_starts_where_a_previous_process_stopped() -> None:
    etcd = FakeEtcd([([8], None)])
    seen: list[int] = []

    async def on_list(values: list[KeyValue], revision: int) -> None:
        raise AssertionError("no list when resuming")

    async def on_event(event: WatchEvent) -> None:
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=on_list, on_event=on_event, what="t", start_revision=8)  # type: ignore[arg-type]
    await run_until(watch, lambda: seen == [8])
    assert etcd.watched_from[0] == 8


async def test_a_failing_handler_does_not_end_the_watch() -> None:
    etcd = FakeEtcd([([11], None), ([11, 12], None)])
    seen: list[int] = []
    failures = [DatabaseUnavailable("the database did not answer")]

    async def on_list(values: list[KeyValue], revision: int) -> None:
        pass

    async def on_event(event: WatchEvent) -> None:
        if failures:
            raise failures.pop()
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=on_list, on_event=on_event, what="t")  # type: ignore[arg-type]
    await run_until(watch, lambda: 12 in seen)
    assert seen == [11, 12]  # the failed event was delivered again


async def test_relist_mode_lists_after_every_watch() -> None:
    etcd = FakeEtcd([([11], None), ([12], None)])
    listed: list[int] = []

    async def on_list(values: list[KeyValue], revision: int) -> None:
        listed.append(revision)

    async def on_event(event: WatchEvent) -> None:
        pass

    watch = PrefixWatch(etcd, "/p/", on_list=on_list, on_event=on_event, what="t", relist=True)  # type: ignore[arg-type]
    await run_until(watch, lambda: len(listed) >= 3)
    assert listed[:3] == [10, 11, 12]
