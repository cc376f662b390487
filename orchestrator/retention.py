"""The periodic clean-up: runs and tick records older than ``MAO_RUN_RETENTION_DAYS`` (default 90)
are deleted, in-process, shortly after start and then every ``EVERY`` seconds.

Contract: only ended runs go (a run still pending or running is kept whatever its age); one failed
pass (the database away) is logged and the next pass tries again; nothing else depends on it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .services import LoopService
from .store import Store
from .store.retention import forget_before

log = logging.getLogger(__name__)

FIRST_AFTER = 60.0  # seconds after start: never compete with the start itself
EVERY = 3600.0

# What else to forget on each pass (e.g. full step logs): called with the cutoff.
Extra = Callable[[datetime], Awaitable[Any]]


class Retention(LoopService):
    what = "retention"
    interval = EVERY
    first_wait = FIRST_AFTER

    def __init__(self, store: Store, days: float, extras: list[Extra] | None = None) -> None:
        self.store = store
        self.days = days
        self.extras = list(extras or [])

    async def clean(self, now: datetime | None = None) -> tuple[int, int]:
        """One pass, said in the log when it deleted something: returns (runs, ticks) deleted."""
        runs, ticks, sentence = await self._pass(now)
        if sentence:
            log.info("%s: %s", self.what, sentence)
        return runs, ticks

    async def run_once(self) -> str | None:
        return (await self._pass())[2]

    async def _pass(self, now: datetime | None = None) -> tuple[int, int, str | None]:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.days)
        runs, ticks = await forget_before(self.store, cutoff)
        for extra in self.extras:
            await extra(cutoff)
        if not (runs or ticks):
            return runs, ticks, None
        when = cutoff.isoformat(timespec="seconds")
        return (
            runs,
            ticks,
            f"deleted {runs} run(s) and {ticks} tick record(s) older than {self.days:g} day(s) (before {when})",
        )
