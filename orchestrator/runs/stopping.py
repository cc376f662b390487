"""Stopping runs and waiting for them: cancel (a queued run, a running one, a backfill's queued
runs together), a run's timeout, and the process's shutdown, which is not a stop (the runs are
left where they are for the next start to resume); ``wait`` until a run has ended.

Stopping a running run: its objects are removed from their backends at once (and checked gone),
its steps not yet voting are cancelled (nothing of theirs is pushed), a step already voting
finishes its merge; the driver (``runs/drive.py``) then gives the steps never started the stop's
status and the run's end is recorded (``runs/recording.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..domain.states import RunStatus
from ..errors import Conflict, NotFound
from ..metrics import UNSERVED, Metrics
from ..store.run_views import RunView
from ..store.runs import RunRecords
from ..tasks import spawn
from .active import CANCELLED, ActiveRun, LiveRuns, Stop, describe
from .admission import Admission
from .attempt import Attempts
from .execution import Execution
from .recording import Recorder

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: one per engine, its bound methods are callbacks
class Stopper:
    """Cancels, times out and waits for the runs of ``live`` and ``admission``'s queue."""

    live: LiveRuns
    admission: Admission
    records: RunRecords
    recorder: Recorder
    execution: Execution
    attempts: Attempts
    metrics: Metrics = UNSERVED  # the node's, through ``Runner.metrics``
    _helpers: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    async def wait(self, run_id: str) -> RunView | None:
        """Until the run has ended and its record is closed (a queued run: first until it leaves
        the queue). Never raises for the run's own sake, however it ended. Returns the record as
        the run's task read it after its close (None when it has none: read it), so that a waiting
        ``POST /pipeline/run`` answers without reading it again."""
        if (leaving := self.admission.leaving(run_id)) is not None:
            await leaving.wait()
        task = self.live.tasks.get(run_id)
        if task is None:
            return None
        # asyncio.wait: a client that hangs up does not cancel the run it started, and the run's
        # outcome (even a cancelled task at shutdown) is never this caller's exception.
        await asyncio.wait([task])
        if task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    async def cancel(self, run_id: str) -> None:
        """Stop a running run (see the module docstring), or end a queued one ``cancelled`` without
        starting it; returns once stopping has begun. NotFound: no such run; Conflict (409): the run
        has ended."""
        if self.admission.is_queued(run_id):
            if await self._cancel_queued(run_id):
                return
        elif (leaving := self.admission.leaving(run_id)) is not None:
            await leaving.wait()  # leaving the queue this very moment: stop it once it has a task
        run = self.live.runs.get(run_id)
        if run is None:
            record = await self.records.get(run_id)
            if record is None:
                raise NotFound(f"no run {run_id!r} on this instance")
            raise Conflict(
                f"run {run_id} has ended ({record.status.value}); only a run that is still going can be cancelled",
                code="run_ended",
                status=record.status.value,
            )
        if run.stop is None:
            log.info("run %s of %s: cancel requested", run_id, run.pipeline.name)
            await self.stop(run, CANCELLED)

    async def cancel_queued_many(
        self, run_ids: Sequence[str], write: Callable[[list[str]], Awaitable[list[str]]]
    ) -> tuple[list[str], list[str]]:
        """End queued runs ``cancelled`` together (a backfill's): they leave admission's queue first,
        all at once (no await between, so none starts meanwhile), then ``write`` ends the given ones
        in one transaction and answers those it ended; if it raises, they are queued again. A run
        leaving the queue this very moment is starting: it is not cancelled here. Answers (cancelled,
        starting) ids."""
        starting = [
            r
            for r in run_ids
            if r in self.live.runs or (self.admission.leaving(r) is not None and not self.admission.is_queued(r))
        ]
        dropped = [t for r in run_ids if r not in starting and (t := self.admission.drop(r)) is not None]
        try:
            cancelled = await write([r for r in run_ids if r not in starting])
        except BaseException:
            self.admission.enqueue(dropped)
            raise
        for ticket in dropped:
            if ticket.run_id in cancelled:
                self.metrics.observe_run({"pipeline": ticket.pipeline, "trigger": ticket.trigger,
                                          "status": RunStatus.CANCELLED, "steps": []})  # fmt: skip
        log.info("%d queued run(s) cancelled together", len(cancelled))
        return cancelled, starting

    async def _cancel_queued(self, run_id: str) -> bool:
        """End a queued run ``cancelled``; False when it left the queue meanwhile."""
        ticket = self.admission.drop(run_id)  # first: admission must not start it meanwhile
        if ticket is None:
            return False
        try:
            cancelled = await self.records.cancel_queued(run_id, "cancelled on request while queued")
        except BaseException:
            self.admission.enqueue([ticket])
            raise
        log.info("queued run %s of %s cancelled", run_id, ticket.pipeline)
        with contextlib.suppress(Exception):
            if cancelled and (record := await self.records.get(run_id)) is not None:
                self.metrics.observe_run(record.to_json())
        return cancelled

    def stop_soon(self, run: ActiveRun, stop: Stop) -> None:
        """``stop`` from a timer (a run's timeout): in a task of its own, unless the run is
        stopping already or has ended."""
        if run.stop is None and run.id in self.live.runs:
            spawn(self.stop(run, stop), f"stop run {run.id}", self._helpers)

    async def stop(self, run: ActiveRun, stop: Stop) -> None:
        run.stop = stop
        for name, task in run.tasks.items():
            if name not in run.voting:  # a merge under way finishes: half a vote helps nobody
                task.cancel()
        try:
            removed = await self.execution.remove_run(run.id)
            if removed:
                log.info("run %s: removed %s", run.id, ", ".join(removed))
        except Exception as exc:  # noqa: BLE001 - stopping goes on: the sweep removes them later
            log.warning("run %s: objects not removed (%s); the sweep removes them", run.id, describe(exc))

    async def shutdown(self) -> None:
        """Leave the runs where they are, for the next start to resume (see the module docstring):
        queued runs stay queued; steps whose tool has ended commit and vote (up to 30 s); every
        other step stops waiting, its object running on."""
        self.recorder.closing = True
        await self.admission.close()  # queued runs stay queued, for the next start
        self.execution.detaching = True
        for run in self.live.runs.values():
            run.detaching = True
            for name, task in run.tasks.items():
                if name not in run.voting and name not in run.finishing:
                    task.cancel()
        tasks = list(self.live.tasks.values())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for run_task in tasks:
            run_task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.execution.close()
        await self.attempts.step_logs.close()
