"""The door (``orchestrator.runs.door.Door``) in memory, for the schedulers' tests: it keeps every
ask, starts a run for each ask its pipeline has room for, and skips the others in the door's words."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from orchestrator.domain.causes import (
    CatchUp,
    Decision,
    FederationTick,
    Fired,
    Refused,
    RunAsk,
    Skipped,
)
from orchestrator.errors import MaoError
from orchestrator.runs.door import policy_of, previous_still_running, still_running


@dataclass(frozen=True)
class Started:
    run_id: str
    ask: RunAsk

    @property
    def pipeline(self) -> str:
        return self.ask.pipeline

    @property
    def trigger(self) -> str:
        return self.ask.cause.trigger

    @property
    def tick_at(self) -> datetime | None:
        return getattr(self.ask.cause, "tick_at", None)


class MemoryDoor:
    """Runs are named ``<prefix><n>``. With ``keep_active`` a started run holds its pipeline until
    ``finish`` (so "one at a time" can be watched); ``active`` may also be set by hand (pipeline ->
    its running runs). A pipeline with a run going skips an ask, unless the ask is ``allow``, as the
    real door words it (its queue and replace policies are the door's own tests: tests/unit/test_door.py);
    a federation-wide tick then asks ``ask.elsewhere``. ``refuse`` answers every ask with that error;
    ``fail`` raises it (a bug)."""

    def __init__(self, prefix: str = "run", keep_active: bool = False, instance: str = "here") -> None:
        self.prefix = prefix
        self.keep_active = keep_active
        self.instance = instance
        self.active: dict[str, list[str]] = {}
        self.asks: list[RunAsk] = []
        self.started: list[Started] = []
        self.refuse: MaoError | None = None
        self.fail: Exception | None = None
        self._ended: dict[str, asyncio.Event] = {}

    async def request_run(self, ask: RunAsk) -> Decision:
        self.asks.append(ask)
        if self.fail is not None:
            raise self.fail
        if self.refuse is not None:
            return Refused(self.refuse)
        policy = policy_of(ask)
        schedule_tick = isinstance(ask.cause, FederationTick | CatchUp) and ask.federation
        if policy != "allow" and (active := self.active_run(ask.pipeline)) is not None:
            why = still_running(active, self.instance) if schedule_tick else previous_still_running(active, policy)
            return Skipped(why, active)
        if schedule_tick and policy != "allow" and ask.elsewhere is not None:
            try:
                found = await ask.elsewhere()
            except MaoError as exc:
                return Refused(exc)
            if found is not None:
                return Skipped(still_running(found.run_id, found.instance))
        run_id = f"{self.prefix}{len(self.started) + 1}"
        self.started.append(Started(run_id, ask))
        if self.keep_active:
            self.active.setdefault(ask.pipeline, []).append(run_id)
            self._ended[run_id] = asyncio.Event()
        return Fired(run_id)

    def active_run(self, pipeline: str) -> str | None:
        runs = self.active.get(pipeline)
        return runs[0] if runs else None

    def active_runs(self, pipeline: str) -> list[str]:
        return list(self.active.get(pipeline, []))

    async def wait(self, run_id: str) -> None:
        if (ended := self._ended.get(run_id)) is not None:
            await ended.wait()

    def finish(self, pipeline: str = "p") -> None:
        """The pipeline's oldest active run ends."""
        runs = self.active.get(pipeline)
        if runs:
            ended = runs.pop(0)
            if (event := self._ended.pop(ended, None)) is not None:
                event.set()

    def pipelines(self) -> list[str]:
        """The pipeline of each run started, in order."""
        return [s.pipeline for s in self.started]

