"""When a Slurm attempt's stall clock starts (the empty first chunk of its followed log): once the
job's script says it starts the container, as the step's timeout does; not when Slurm says the job
runs while its script still checks the image (seconds on a busy node: a ``stall_timeout=2`` step
once stalled there, before its tool had run, with an empty log)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.executors.slurm_answers import JobView
from orchestrator.executors.slurm_cli import Look, QueueWatch
from orchestrator.executors.slurm_logs import follow_file


class Queue(QueueWatch):
    """The queue as the test shows it: each look waits for the next state the test puts."""

    def __init__(self) -> None:  # no squeue here
        self.states: asyncio.Queue[str] = asyncio.Queue()
        self.asked = 0

    async def after(self, since: float) -> Look:
        self.asked += 1
        state = await self.states.get()
        job = JobView("7", "mao-a", state, "None", "n1", 1.0, 2.0, None, None, {})
        return Look(max(since, time.monotonic()), {"7": job}, {"mao-a": job})

    async def show(self, state: str) -> None:
        """One look showing ``state``, and until the follower has taken it and asks for the next."""
        asked = self.asked
        await self.states.put(state)
        async with asyncio.timeout(30):
            while self.asked == asked:
                await asyncio.sleep(0.01)


def follow(tmp_path: Path, queue: Queue) -> AsyncIterator[bytes]:
    return follow_file(
        tmp_path / "mao-a.out", 0, queue, lambda jobs, _names: jobs.get("7"), 0.0, tmp_path / "mao-a.err"
    )


async def test_the_clock_starts_when_the_script_starts_the_container(tmp_path: Path) -> None:
    queue = Queue()
    chunks = follow(tmp_path, queue)
    first = asyncio.ensure_future(anext(chunks))
    await queue.show("PENDING")
    (tmp_path / "mao-a.err").write_text("mao-job: node n1\n")  # running, checking the image
    await queue.show("RUNNING")
    await queue.show("RUNNING")
    assert not first.done()  # nothing yet: the tool has not started
    (tmp_path / "mao-a.err").write_text("mao-job: node n1\nmao-job: start\n")
    (tmp_path / "mao-a.out").write_text("hello\n")
    await queue.states.put("RUNNING")
    assert await asyncio.wait_for(first, 30) == b""  # the clock starts here
    assert await asyncio.wait_for(anext(chunks), 30) == b"hello\n"
    await queue.states.put("COMPLETED")
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(chunks), 30)


@pytest.mark.parametrize("end", ["COMPLETED", "FAILED", "CANCELLED"])
async def test_a_job_that_ended_without_a_container_has_started_too(tmp_path: Path, end: str) -> None:
    """E.g. its image was missing: the follower still says it started, then ends."""
    queue = Queue()
    chunks = follow(tmp_path, queue)
    (tmp_path / "mao-a.err").write_text("mao-job: node n1\nmao-job: image-unavailable busybox\n")
    await queue.states.put(end)
    assert await asyncio.wait_for(anext(chunks), 30) == b""
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(chunks), 30)
