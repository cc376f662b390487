"""The one door for starting a run: every cause asks ``request_run(ask)`` and gets a decision.

Callers (``domain/causes.py`` has the values): the API (``Manual``), this instance's cron schedules
(``CronTick``; ``CatchUp`` at start), federation-wide schedules (``FederationTick``; ``CatchUp`` with
``federation``), data triggers of both scopes (``DataTrigger``), backfills (``Backfill``) and
retries (``Retry``). They
record or answer the decision and decide nothing themselves. Here, in this order:

1. The overlap policy (below): whether the pipeline's previous run keeps the new one from starting
   (``Skipped``), or has to be stopped first (``replace``).
2. Admission (``runs/admission.py``, through ``Runner.start``): the run starts now (``Fired``) or
   waits ``queued`` (``Queued``) for its pipeline (``queue``) or for room on the instance
   (``MAO_MAX_ACTIVE_RUNS``), in the order of its ``priority``. Pools are taken per step while the
   run goes (``runs/pools.py``), in the same order.
3. Whatever fails (no such pipeline, the database away, a manual run of a busy pipeline) is
   ``Refused`` with the error: the API answers it, a scheduler records its message as the reason.

Overlap policies, what a new run does while the pipeline's previous run still goes (one run of a
pipeline at a time on an instance, unless ``allow``):
- ``skip`` (the default): the new run does not start; the tick or advance is recorded as skipped.
- ``replace``: the running run is cancelled (``POST /runs/{id}/cancel``'s path: containers killed,
  nothing of an unfinished step pushed, it ends ``cancelled``), and once it has ended the new one
  starts. Instance scope only: a federation-wide schedule's previous run may be on another instance,
  which this one cannot cancel.
- ``queue``: the new run waits ``queued`` and starts when the running one ends; at most one waiting
  run per pipeline, so a later one is skipped (recorded with the reason). Instance scope only.
- ``allow``: the new run starts beside the running one(s) (``Busy.ALLOW``: admission lets it in
  although its pipeline is busy, as the instance's limit allows); a step whose node-branch folder is
  busy takes a folder of its own, and the outputs are combined on the node branch
  (runs/attempt.py, ``DatasetRepo.commit_worktree``).

How the causes differ (each as it was before there was a door; tests pin the sentences):
- A manual run (and a retry) is checked by admission alone, whose 409 names the busy pipeline ("pipeline 'p' is
  already running (run r); ..."); only ``replace`` stops the running run(s) here first.
- Instance cron ticks, their catch-ups and data triggers (both scopes) make room by their policy and,
  when they cannot, are skipped naming the run in the way ("previous run r still running (overlap
  'skip')"). A fired tick notes how its run started when not simply ("replaced run r", "queued
  behind run r", "queued: the instance has no room for it yet").
- A federation-wide tick or catch-up is skipped while the schedule's previous run goes here ("...
  still running on <this instance>") or, asked only then, on another instance (``ask.elsewhere``).
- Federation scope knows only ``skip`` and ``allow`` (anything else is ``skip``).
- A backfill's runs never wait for a policy: they are recorded ``queued`` together, in tick order,
  and admission starts them one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ..domain.causes import (
    Backfill,
    CatchUp,
    Cause,
    DataTrigger,
    Decision,
    FederationTick,
    Fired,
    Manual,
    Overlap,
    Queued,
    Refused,
    Retry,
    RunAsk,
    Skipped,
)
from ..domain.versions import ReadDefinition
from ..errors import Conflict, MaoError, NotFound
from ..store.backfills import NewBackfill
from ..store.run_views import RunView
from .admission import Busy, RunInProgress

log = logging.getLogger(__name__)

# How long a replaced run may take to stop before the new one gives up (its containers are killed
# at once; this bounds a stuck push or Docker call, not normal cancellation).
REPLACE_TIMEOUT = 120.0
NO_ROOM = "queued: the instance has no room for it yet (GET /queue)"
BACKFILL_ORDER = "a backfill's runs start one at a time, in tick order"


class Door(Protocol):
    """What every cause of a run asks (``RunDoor``; an in-memory one in the tests)."""

    async def request_run(self, ask: RunAsk) -> Decision: ...

    async def wait(self, run_id: str) -> None:
        """Until the run has ended (a queued run: first until it leaves the queue)."""

    def active_run(self, pipeline: str) -> str | None:
        """The run that holds the pipeline here: running, else the first waiting; None when idle."""


class Runs(Protocol):
    """What the door needs of the run engine (``runs.engine.Runner``)."""

    def active_run(self, pipeline: str) -> str | None: ...

    def active_runs(self, pipeline: str) -> list[str]: ...

    def waiting_run(self, pipeline: str) -> str | None: ...

    def is_queued(self, run_id: str) -> bool: ...

    async def start(
        self,
        name: str,
        trigger: str,
        schedule_id: str | None = None,
        *,
        priority: int = 0,
        busy: Busy = Busy.REFUSE,
        version: int | None = None,
        registrations_checked: bool = False,
        definition: ReadDefinition | None = None,
        **cause: Any,
    ) -> str: ...

    async def queue_many(
        self,
        name: str,
        trigger: str,
        causes: Sequence[dict[str, Any]],
        priority: int = 0,
        version: int | None = None,
        backfill: NewBackfill | None = None,
    ) -> list[str]: ...

    async def cancel(self, run_id: str) -> None: ...

    async def wait(self, run_id: str) -> RunView | None:
        """Until the run has ended; its record as closed, or None (read it)."""


class RunDoor:
    def __init__(self, runs: Runs, instance: str) -> None:
        self.runs = runs
        self.instance = instance

    def active_run(self, pipeline: str) -> str | None:
        return self.runs.active_run(pipeline)

    async def wait(self, run_id: str) -> None:
        await self.runs.wait(run_id)

    async def request_run(self, ask: RunAsk) -> Decision:
        policy = policy_of(ask)
        try:
            if isinstance(ask.cause, Backfill):
                return await self._backfill(ask, ask.cause)
            active, refusal = await self._make_room(ask, policy)
            if refusal is not None:
                return refusal
            run_id = await self.runs.start(
                ask.pipeline,
                ask.cause.trigger,
                priority=ask.priority,
                busy=busy_for(policy),
                version=ask.version,
                registrations_checked=checked(ask, policy),
                definition=carried(ask, policy),
                **cause_fields(ask.cause),
            )
        except MaoError as exc:
            return Refused(exc)
        return started(self.runs, run_id, active, policy)

    async def _backfill(self, ask: RunAsk, backfill: Backfill) -> Queued:
        """Its record and its runs, queued in tick order, in one transaction."""
        record = NewBackfill(
            backfill.id, ask.pipeline, backfill.cron, backfill.timezone, backfill.start, backfill.end,
            len(backfill.ticks), ask.priority, ask.version, backfill.created_by,
        )  # fmt: skip
        run_ids = await self.runs.queue_many(
            ask.pipeline,
            backfill.trigger,
            [{"tick_at": tick, "backfill_id": backfill.id} for tick in backfill.ticks],
            priority=ask.priority,
            version=ask.version,
            backfill=record,
        )
        return Queued(tuple(run_ids), BACKFILL_ORDER)

    async def _make_room(self, ask: RunAsk, policy: Overlap) -> tuple[str | None, Skipped | Refused | None]:
        """``(the run in the way, why not)``: nothing in the way, or what keeps the new run from starting."""
        cause = ask.cause
        if isinstance(cause, Manual | Retry):
            if policy != "replace":
                return None, None  # admission answers for a busy pipeline
            active, why = await make_room(self.runs, ask.pipeline, policy)
            return active, None if why is None else Refused(RunInProgress(why, run_id=active))
        if isinstance(cause, FederationTick | CatchUp) and ask.federation:
            if policy == "allow":  # each instance's runs write their own node branches
                return None, None
            if (active := self.runs.active_run(ask.pipeline)) is not None:
                return active, Skipped(still_running(active, self.instance), active)
            if ask.elsewhere is not None and (found := await ask.elsewhere()) is not None:
                return None, Skipped(still_running(found.run_id, found.instance))
            return None, None
        active, why = await make_room(self.runs, ask.pipeline, policy)
        return active, None if why is None else Skipped(why, active)


def policy_of(ask: RunAsk) -> Overlap:
    """The policy that applies: federation-wide, ``allow`` or else ``skip``."""
    if ask.federation:
        return "allow" if ask.overlap == "allow" else "skip"
    return ask.overlap


def checked(ask: RunAsk, policy: Overlap) -> bool:
    """``Runner.start``'s ``registrations_checked``: the API compared the registrations with the pins
    just now, for the pipeline as it is (no ``version``, which may use others), and no ``replace``
    waits for a run to stop in between; else the run compares them itself when it starts."""
    cause = ask.cause
    fresh = isinstance(cause, Manual) and cause.registrations_checked
    return fresh and ask.version is None and policy != "replace"


def carried(ask: RunAsk, policy: Overlap) -> ReadDefinition | None:
    """``Runner.start``'s ``definition``: the pipeline's current definition as the API read it, for
    a run of the pipeline as it is (no ``version``) that no ``replace`` makes wait for a run to
    stop; else the run reads it itself when it starts (and ``Runner.start`` takes it only while it
    is still the stored one)."""
    cause = ask.cause
    if isinstance(cause, Manual) and ask.version is None and policy != "replace":
        return cause.definition
    return None


def cause_fields(cause: Cause) -> dict[str, Any]:
    """What a run's record keeps of its cause (``Runner.start``'s keywords)."""
    if isinstance(cause, DataTrigger):
        return {
            "schedule_id": cause.trigger_id,
            "trigger_dataset": cause.dataset,
            "trigger_commit": cause.commit,
        }
    if isinstance(cause, Retry):
        return {"retry_of": cause.retry_of}
    if isinstance(cause, Manual | Backfill):
        return {}
    return {"schedule_id": cause.schedule_id, "tick_at": cause.tick_at}


def previous_still_running(run_id: str, policy: Overlap) -> str:
    """Why a tick or an advance of this instance is skipped: its pipeline's run still goes."""
    return f"previous run {run_id} still running (overlap {policy!r})"


def still_running(run_id: str | None, instance: str) -> str:
    """Why a federation-wide tick is skipped: its previous run goes on ``instance``."""
    return f"previous run {run_id} still running on {instance}"


def busy_for(policy: Overlap | None) -> Busy:
    """What admission does when the pipeline is busy, under ``policy``."""
    if policy == "queue":
        return Busy.QUEUE_ONE
    return Busy.ALLOW if policy == "allow" else Busy.REFUSE


async def make_room(runs: Runs, pipeline: str, policy: Overlap) -> tuple[str | None, str | None]:
    """``(active run, why not)``: ``why not`` is None when a new run of ``pipeline`` may start now
    (nothing running, ``allow``, ``replace`` stopped the run(s), or ``queue`` has room for one waiting run behind
    it: the active run's id comes first); otherwise the reason to record for not starting, with the
    run in the way."""
    active = runs.active_run(pipeline)
    if active is None or policy == "allow":
        return None, None
    if policy == "queue":
        waiting = runs.waiting_run(pipeline)
        if waiting is None:
            return active, None
        return waiting, (
            f"run {waiting} already waits for run {active} to end "
            "(overlap 'queue': at most one waiting run per pipeline)"
            if waiting != active
            else f"run {waiting} already waits in the queue (overlap 'queue': at most one waiting run per pipeline)"
        )
    if policy != "replace":
        return active, previous_still_running(active, policy)
    # Every run still going (several when earlier ones were allowed side by side).
    for run_id in runs.active_runs(pipeline):
        log.info("overlap 'replace': cancelling run %s of %s for a new run", run_id, pipeline)
        with contextlib.suppress(NotFound, Conflict):  # it ended meanwhile: nothing to cancel
            await runs.cancel(run_id)
        try:
            await asyncio.wait_for(runs.wait(run_id), REPLACE_TIMEOUT)
        except TimeoutError:
            return run_id, f"previous run {run_id} did not stop within {REPLACE_TIMEOUT:.0f} s (overlap 'replace')"
    return active, None


def started(runs: Runs, run_id: str, active: str | None, policy: Overlap) -> Fired | Queued:
    """How the run started: at once, or queued; with what a fired tick's record says of it."""
    note = None
    if active is not None and policy == "replace":
        note = f"replaced run {active} (overlap 'replace')"
    elif active is not None and policy == "queue":
        note = f"queued behind run {active} (overlap 'queue')"
    if runs.is_queued(run_id):
        return Queued((run_id,), note or NO_ROOM)
    return Fired(run_id, note)
