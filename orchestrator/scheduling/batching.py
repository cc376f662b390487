"""Coalescing many small awaits into one call: what keeps a burst of schedule ticks cheap.

A thousand schedules due in the same second each want one read and one write of the database. One
transaction each is a thousand transactions (SQLite writes one at a time, PostgreSQL round-trips
each), and the last tick waits for all the others. A ``Coalescer`` hands every item submitted while
it was busy (or in the same event-loop turn) to its handler in one call, and each submitter gets its
own result, or the handler's exception, as if it had made the call alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` -> ``handler(items)[i]`` for that item.

    Contract of ``handler``: one result per item, in order; an exception fails every item of its
    call (a transaction that rolled back for all). At most ``max_batch`` items go into one call."""

    def __init__(
        self, handler: Callable[[list[T]], Awaitable[Sequence[R]]], name: str, max_batch: int = 500
    ) -> None:
        self.handler = handler
        self.name = name
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=self.name)
        return await future

    async def close(self) -> None:
        """Stop; whoever still waits is cancelled."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()

    async def _drain(self) -> None:
        # One turn of the loop first: the other tasks a burst woke up submit before the first call.
        await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                results = await self.handler([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every waiter, who raises it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its waiter may have been cancelled meanwhile
                    future.set_result(result)
