"""The periodic clean-up: runs and tick records older than ``MAO_RUN_RETENTION_DAYS`` (default 90)
are deleted, in-process, shortly after start and then every ``EVERY`` seconds.

Contract: only ended runs go (a run still pending or running is kept whatever its age); one failed
pass (the database away) is logged and the next pass tries again; nothing else depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import MaoError
from .store import Store
from .store.retention import forget_before
from .tasks import spawn

log = logging.getLogger(__name__)

FIRST_AFTER = 60.0  # seconds after start: never compete with the start itself
EVERY = 3600.0

# What else to forget on each pass (e.g. full step logs): called with the cutoff.
Extra = Callable[[datetime], Awaitable[Any]]


class Retention:
    def __init__(self, store: Store, days: float, extras: list[Extra] | None = None) -> None:
        self.store = store
        self.days = days
        self.extras = list(extras or [])
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        spawn(self._loop(), "retention clean-up", self._tasks)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def clean(self, now: datetime | None = None) -> tuple[int, int]:
        """One pass: returns (runs, ticks) deleted."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.days)
        runs, ticks = await forget_before(self.store, cutoff)
        for extra in self.extras:
            await extra(cutoff)
        if runs or ticks:
            log.info(
                "retention: deleted %d run(s) and %d tick record(s) older than %g day(s) (before %s)",
                runs,
                ticks,
                self.days,
                cutoff.isoformat(timespec="seconds"),
            )
        return runs, ticks

    async def _loop(self) -> None:
        await asyncio.sleep(FIRST_AFTER)
        while True:
            try:
                await self.clean()
            except MaoError as exc:
                log.warning("retention: this pass failed, the next one tries again: %s", exc.message)
            await asyncio.sleep(EVERY)
