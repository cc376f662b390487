"""PrefixWatch on a fake etcd: resuming at the last revision, compaction, outages, failing handlers,
backoff, the idle timeout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from orchestrator.errors import BadRequest, DatabaseUnavailable, EtcdUnavailable, MaoError
from orchestrator.federation import watch as watch_module
from orchestrator.federation.answers import HistoryCompacted, KeyValue, WatchEvent
from orchestrator.federation.failover import LeaseNotFound
from orchestrator.federation.watch import PrefixWatch

REAL_SLEEP = asyncio.sleep


Step = tuple[list[int], BaseException | None] | tuple[list[int], BaseException | None, bool]
CANNOT_OPEN: Step = ([], EtcdUnavailable("could not watch"), False)


class FakeEtcd:
    """Plays a script: each watch call takes the next step (events to yield, then how it ends, and
    whether the watch opened at all: by default it did)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.lists: list[int] = []
        self.watched_from: list[int] = []
        self.revision = 10
        self.listeners: list[Callable[[], None]] = []

    def on_available(self, callback: Callable[[], None]) -> None:
        self.listeners.append(callback)

    def answers_again(self) -> None:
        for callback in self.listeners:
            callback()

    async def list_with_revision(self, prefix: str) -> tuple[list[KeyValue], int]:
        self.lists.append(self.revision)
        return [KeyValue(prefix + "k", {"v": 1}, self.revision, self.revision, 0)], self.revision

    async def watch_prefix(
        self, prefix: str, start_revision: int, on_open: Callable[[], None]
    ) -> AsyncIterator[WatchEvent]:
        self.watched_from.append(start_revision)
        if not self.steps:
            on_open()
            await asyncio.Event().wait()  # the script is over: a quiet watch
        revisions, end, *opened = self.steps.pop(0)
        if opened != [False]:
            on_open()
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
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses asked for (all of them cut short)."""
    asked: list[float] = []

    async def short(delay: float, *args: Any) -> Any:
        asked.append(delay)
        return await REAL_SLEEP(min(delay, 0.001), *args)

    monkeypatch.setattr(watch_module.asyncio, "sleep", short)
    return asked


def backoffs(slept: list[float]) -> list[float]:
    """The pauses of the watch's backoff (not the 0.2 s before re-watching, nor this module's)."""
    return [delay for delay in slept if delay >= 1]


async def nothing(*args: Any) -> None:
    pass


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


async def test_the_backoff_grows_while_watches_cannot_open_and_resets_once_one_opens(
    slept: list[float],
) -> None:
    outage = [CANNOT_OPEN] * 7
    etcd = FakeEtcd([([11], EtcdUnavailable("gone")), *outage, ([12], None), ([], EtcdUnavailable("gone"))])
    seen: list[int] = []

    async def on_event(event: WatchEvent) -> None:
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=nothing, on_event=on_event, what="t")  # type: ignore[arg-type]
    await run_until(watch, lambda: len(etcd.watched_from) >= 11)
    assert seen == [11, 12]
    # A stream that breaks after it opened waits 1 s; each watch that cannot open waits longer, up to
    # 30 s; one that opens again starts over (its stream breaking later waits 1 s).
    assert backoffs(slept) == [1, 2, 4, 8, 16, 30, 30, 30, 1]


async def test_a_pause_ends_as_soon_as_etcd_answers_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_module.asyncio, "sleep", REAL_SLEEP)  # a real 1 s pause
    etcd = FakeEtcd([CANNOT_OPEN, ([11], None)])
    seen: list[int] = []

    async def on_event(event: WatchEvent) -> None:
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=nothing, on_event=on_event, what="t")  # type: ignore[arg-type]
    task = asyncio.create_task(watch.run())
    try:
        while not etcd.watched_from:
            await REAL_SLEEP(0.01)
        await REAL_SLEEP(0.05)
        paused_at = asyncio.get_running_loop().time()
        etcd.answers_again()  # another call (the heartbeat, say) got through
        while not seen:
            await REAL_SLEEP(0.01)
        assert asyncio.get_running_loop().time() - paused_at < 0.5  # not the 1 s pause
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    "error",
    [
        DatabaseUnavailable("the database did not answer"),
        LeaseNotFound("etcd failed: requested lease not found"),  # etcd's, but the handler's call
    ],
)
async def test_a_handler_failing_with_a_mao_error_gets_the_event_again_with_backoff(
    slept: list[float], error: MaoError
) -> None:
    etcd = FakeEtcd([([11], None), ([11], None), ([11], None), ([11, 12], None)])
    seen: list[int] = []
    failures = [error] * 3

    async def on_event(event: WatchEvent) -> None:
        if failures:
            raise failures.pop()
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=nothing, on_event=on_event, what="t")  # type: ignore[arg-type]
    await run_until(watch, lambda: 12 in seen)
    assert seen == [11, 12] and backoffs(slept) == [1, 2, 4]


@pytest.mark.parametrize(
    "error",
    [
        KeyError("id"),  # a record without "id"
        TypeError("can't compare offset-naive and offset-aware datetimes"),
        BadRequest("invalid dataset name"),  # a MaoError that is no outage fails the same way each time
    ],
)
async def test_an_event_whose_handler_fails_otherwise_is_skipped_not_retried_forever(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    etcd = FakeEtcd([([11, 12], None), ([12, 13], None)])  # the second watch resumes at 12
    seen: list[int] = []
    attempts: list[str] = []

    async def on_event(event: WatchEvent) -> None:
        attempts.append(event.key)
        if event.key == "/p/k12":
            raise error
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=nothing, on_event=on_event, what="t")  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger=watch_module.__name__):
        await run_until(watch, lambda: 13 in seen)
    assert seen == [11, 13]
    assert attempts.count("/p/k12") == 1  # not handed over again when the watch resumed at 12
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "PUT /p/k12 at revision 12 failed; skipping that event" in failure.getMessage()
    assert failure.exc_info is not None


async def test_a_list_whose_handler_fails_otherwise_does_not_stop_the_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    etcd = FakeEtcd([([11], None)])
    seen: list[int] = []

    async def on_list(values: list[KeyValue], revision: int) -> None:
        raise TypeError("can't compare offset-naive and offset-aware datetimes")

    async def on_event(event: WatchEvent) -> None:
        seen.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=on_list, on_event=on_event, what="t")  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger=watch_module.__name__):
        await run_until(watch, lambda: seen == [11])
    assert etcd.lists == [10] and etcd.watched_from[0] == 11
    assert "handling the list of /p/ at revision 10 failed" in caplog.text


class TimedEtcd:
    """Delivers events 11..18 every 50 ms (400 ms in all), then goes quiet."""

    def __init__(self) -> None:
        self.watched_from: list[int] = []

    def on_available(self, callback: Callable[[], None]) -> None:
        pass

    async def list_with_revision(self, prefix: str) -> tuple[list[KeyValue], int]:
        return [], 10

    async def watch_prefix(
        self, prefix: str, start_revision: int, on_open: Callable[[], None]
    ) -> AsyncIterator[WatchEvent]:
        self.watched_from.append(start_revision)
        on_open()
        for revision in range(max(start_revision, 11), 19):
            yield WatchEvent("PUT", f"{prefix}k{revision}", {}, revision)
            await REAL_SLEEP(0.05)
        await asyncio.Event().wait()


async def test_the_resync_timeout_counts_idle_time_only() -> None:
    """A busy watch is not reopened every ``resync_every`` seconds, nor a slow handler cancelled;
    a quiet one is reopened."""
    etcd = TimedEtcd()
    handled: list[int] = []

    async def on_event(event: WatchEvent) -> None:
        if event.revision == 11:
            await REAL_SLEEP(0.5)  # longer than resync_every
        handled.append(event.revision)

    watch = PrefixWatch(etcd, "/p/", on_list=nothing, on_event=on_event, what="t", resync_every=0.3)  # type: ignore[arg-type]
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(300):
            if len(etcd.watched_from) >= 2:
                break
            await REAL_SLEEP(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # All of them in one watch, none cancelled half-way (and 18 again: the watch resumes at it).
    assert handled[:8] == list(range(11, 19)) and handled[8:] in ([], [18])
    assert etcd.watched_from == [11, 18]  # reopened once quiet for 0.3 s, at the last revision
