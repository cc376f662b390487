"""The Coalescer behind a burst of schedule ticks: one call for what arrives together, each waiter
its own result or the call's error."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.scheduling.batching import Coalescer


async def test_what_arrives_together_goes_in_one_call_and_each_gets_its_own_result() -> None:
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [i * 2 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(double, "test", max_batch=50)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(120))) == [i * 2 for i in range(120)]
    assert [len(c) for c in calls] == [50, 50, 20]
    assert await coalescer.submit(7) == 14  # a later submit starts a new call
    await coalescer.close()


async def test_an_error_reaches_every_waiter_of_its_call_and_the_next_call_goes_ahead() -> None:
    fail = True

    async def handler(items: list[str]) -> list[str]:
        if fail:
            raise RuntimeError("database away")
        return items

    coalescer: Coalescer[str, str] = Coalescer(handler, "test")
    results = await asyncio.gather(*(coalescer.submit(s) for s in "abc"), return_exceptions=True)
    assert [str(r) for r in results] == ["database away"] * 3
    fail = False
    assert await coalescer.submit("d") == "d"
    await coalescer.close()


async def test_close_cancels_who_still_waits() -> None:
    started = asyncio.Event()

    async def hang(items: list[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()
        return items

    coalescer: Coalescer[int, int] = Coalescer(hang, "test")
    waiter = asyncio.create_task(coalescer.submit(1))
    await started.wait()
    await coalescer.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
