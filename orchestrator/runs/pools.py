"""Pools: named sets of slots (``MAO_POOLS=gpu=1,heavy=2``) that steps take while they run.

A step with ``pool: gpu`` holds one slot of ``gpu`` from just before its first attempt until it has
ended (every retry, its fallback attempt and, for a fan-out step, all of its shards, under that one
slot); a cached step takes none. A step waiting for a slot stays ``pending`` while its run is
``running`` (the run counts against ``MAO_MAX_ACTIVE_RUNS``; its ``run_timeout`` runs on). Slots go
to waiting steps in the order of their runs (higher priority, then older), like the queue itself, so
a pool limits the steps using it instance-wide, across pipelines.

A pool named by a step must be configured: ``POST /pipeline/init`` refuses a step naming an unknown
pool (400 ``unknown_pool``), and a step whose pool is gone at run time (MAO_POOLS changed since)
fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any


class Slots:
    """``size`` slots, handed to waiters in the order of their ``key`` (smallest first, then FIFO)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: list[tuple[Any, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiters if not future.done())

    async def acquire(self, key: Any) -> None:
        if self.used < self.size and not self.waiting:
            self.used += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (key, next(self._seq), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot in the same instant it was cancelled: pass it on
            raise

    def release(self) -> None:
        """Hand the slot to the first waiter still waiting, or free it."""
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the slot changes hands; ``used`` stays
                return
        self.used -= 1

    @contextlib.asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()


class Pools:
    def __init__(self, sizes: Mapping[str, int]) -> None:
        self._slots = {name: Slots(size) for name, size in sizes.items()}

    def get(self, name: str) -> Slots | None:
        return self._slots.get(name)

    def unknown(self, names: list[str | None]) -> list[str]:
        """The names that are not configured pools (``None``: no pool, fine)."""
        return sorted({n for n in names if n is not None and n not in self._slots})

    def usage(self) -> dict[str, dict[str, int]]:
        return {
            name: {"slots": s.size, "in_use": s.used, "waiting": s.waiting} for name, s in self._slots.items()
        }
