"""The vote's lock, taken while the step's output commit is being recorded.

Between a step's commit and its vote there is one database write (the output commit in the step's
record). Taking the dataset's lock is one etcd write; made at the same time, the step waits for the
longer of the two instead of their sum, and the vote starts with the lock taken. (Where etcd and the
database share one disk their flushes contend: the bench measured ~1-2 ms saved, not the whole take.)
What the lock guards is unchanged: the merge and push, which only start once the vote claims it; the
commit they merge is made before the lock is even asked for.

Bounded: a lock taken early that its vote does not claim within ``EARLY_HOLD`` seconds (a database that
answers slowly) is released again, and the vote takes it anew; other members never wait on this
instance's database for longer than that. A step that fails before its vote drops the lock (released
once taken).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from ..errors import EtcdUnavailable
from ..federation.locks import HeldLock, Locks
from ..phases import beside, phase

# How long a lock taken early waits for its vote before it is released again.
EARLY_HOLD = 0.1


class EarlyLock:
    def __init__(self, locks: Locks, dataset: str, purpose: str, reads: Sequence[str]) -> None:
        self._locks = locks
        self._claimed = asyncio.Event()
        self._task = asyncio.create_task(
            self._take(dataset, purpose, reads), name=f"early lock of {dataset}", context=beside()
        )

    async def _take(self, dataset: str, purpose: str, reads: Sequence[str]) -> HeldLock | None:
        held = await self._locks.take_dataset(dataset, purpose, reads)
        try:
            async with asyncio.timeout(EARLY_HOLD):
                await self._claimed.wait()
        except TimeoutError:
            await self._release(held)
            return None
        return held

    async def claim(self) -> HeldLock | None:
        """The lock, taken, for the vote to release (None: it was given back unclaimed, take it
        anew); raises what taking it raised."""
        self._claimed.set()
        with phase("vote/lock taken early: the rest of its wait (etcd)"):
            return await self._task

    async def drop(self) -> None:
        """No vote after all: the lock is released once taken; an error taking it is of no use now."""
        self._claimed.set()
        await asyncio.wait([self._task])  # not its error: that is of no use any more
        if self._task.cancelled() or self._task.exception() is not None:
            return
        if (held := self._task.result()) is not None:
            await self._release(held)

    async def _release(self, held: HeldLock) -> None:
        # If etcd does not answer, the key goes with its session (ended): within the TTL.
        with contextlib.suppress(EtcdUnavailable):
            await self._locks.release(held)
