"""Readers of a step's log at any moment of its keeper's life (runs/step_logs.py, runs/log_keeper.py):
a reader asks as ``GET /runs/{id}/log?follow=1`` does (the log, or nothing yet: ask again), and
whenever it starts (before the keeper exists, while its store opens, while output comes, while the
log is being kept, after) it reads the whole log, never an empty or cut one. A follower that arrived
while the store was still opening used to get an empty log that had already ended (CI, 2026-12-06:
``test_a_live_log_is_followed_as_it_comes[hpc]``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.executors.seam import Handle
from orchestrator.runs.step_logs import StepLogs

RUN, NAME = "r1", "unit-r1-0-1"


class Stream:
    """A backend's log stream: the chunks, each after a few turns of the event loop."""

    def __init__(self, chunks: list[bytes], pauses: list[int]) -> None:
        self.chunks, self.pauses = chunks, pauses

    async def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        for chunk, pause in zip(self.chunks, self.pauses, strict=True):
            for _ in range(pause):
                await asyncio.sleep(0)
            yield chunk


async def read_as_the_api_does(logs: StepLogs) -> bytes:
    while (chunks := await logs.reader(RUN, NAME, follow=True)) is None:
        await asyncio.sleep(0.002)  # not kept yet, nor being kept: the attempt is preparing
    return b"".join([chunk async for chunk in chunks])


async def keep(logs: StepLogs, stream: Stream) -> None:
    keeper = await logs.keeper(RUN, NAME, None, 1024 * 1024)
    keeper.follow(stream, Handle(backend="memory", name=NAME))  # type: ignore[arg-type]
    await keeper.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6),
    pauses=st.lists(st.integers(0, 5), min_size=6, max_size=6),
)
def test_a_reader_that_starts_at_any_moment_reads_the_whole_log(
    tmp_path_factory: object, lines: list[bytes], pauses: list[int]
) -> None:
    folder = tmp_path_factory.mktemp("logs")  # type: ignore[attr-defined]
    expected = b"".join(lines)

    async def scenario() -> list[bytes]:
        logs = StepLogs(Path(folder))
        life = asyncio.create_task(keep(logs, Stream(lines, pauses[: len(lines)])))
        readers = []
        while not life.done():  # one more reader at every turn of the loop, from before the keeper
            readers.append(asyncio.create_task(read_as_the_api_does(logs)))
            await asyncio.sleep(0)
        await life
        readers.append(asyncio.create_task(read_as_the_api_does(logs)))
        return await asyncio.wait_for(asyncio.gather(*readers), 30)

    got = asyncio.run(scenario())
    assert len(got) > 2
    assert [i for i, text in enumerate(got) if text != expected] == [], expected


async def test_a_reader_found_while_the_keeper_finishes_reads_the_kept_log(tmp_path: Path) -> None:
    """The answer's headers go out between finding the keeper and reading it: meanwhile the log
    may have been kept and the keeper's store removed."""
    logs = StepLogs(tmp_path)
    keeper = await logs.keeper(RUN, NAME, None, 1024 * 1024)
    reader = await logs.reader(RUN, NAME, follow=False)
    assert reader is not None
    keeper.follow(Stream([b"first\n", b"second\n"], [0, 0]), Handle(backend="memory", name=NAME))  # type: ignore[arg-type]
    await keeper.close()
    assert b"".join([chunk async for chunk in reader]) == b"first\nsecond\n"
