"""The run engine: a run is a graph of steps; a step is a series of attempts.

A step starts when every step it ``needs`` has succeeded (or was ``cached``); steps whose needs are
met run side by side. A step whose need did not succeed is ``skipped``; steps that do not depend on
a failed one still run, and the run fails once everything that can run has. Absent ``needs`` is the
previous step, so the prototype's pipelines stay straight lines.

A step's attempts: ``1 + retries`` with the step's tool (retried only when the failure can pass; the
wait is ``retry.backoff``), then once with ``fallback_tool`` when one is set; a step with a
``strategy`` starts with the tool its watcher says and goes on with the replacements after it
(``domain/strategy.py``, ``runs/strategies.py``). ``cache: true`` first
compares the step's memo key (``cache``) with its last success on this instance. One step's work
(pool slot, cache, attempts, fan-out, record) is ``steps.StepWork``; this module drives the graph.

Stopping a run (``cancel``, ``run_timeout``): its objects are removed from their backends at once
(and checked gone), steps not yet voting are cancelled (nothing of theirs is pushed: the node branch
is pushed only by the vote), a step already voting finishes its merge, and steps never started take
the stop's status. Shutdown is not a stop: steps whose tool has ended commit and vote, the others
are left where they are (their objects run on, their records say ``running``) and the next start
resumes the run from them (``reconcile.py``, ``Runner.resume``). One run per pipeline at a time on an instance, unless a trigger's overlap policy
is ``allow`` (``start(..., busy=Busy.ALLOW)``: admitted beside them, its steps take a folder of their own when the node
branch's is busy, ``Attempts.branch``); a run does not need etcd (see ``merging.voting``).

Called only by the door (``runs/door.py``, which every cause of a run asks; tests/unit/test_one_door.py
holds it so): ``Runner.start`` (a backfill's ticks: ``queue_many``) records the run and hands it to
admission (``runs/admission.py``): it starts at once or waits ``queued``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import Settings
from ..datasets import Datasets
from ..datasets.trees import remove_tree
from ..domain.graph import StepNode
from ..domain.pipeline import Pipeline, node_branch
from ..domain.queue import Ticket
from ..domain.retry import Action
from ..domain.states import (
    DONE_STEP,
    ENDED_STEP,
    RUN_TRANSITIONS,
    AttemptStatus,
    RunStatus,
    StepStatus,
    check,
)
from ..errors import BadRequest, Conflict, DatabaseUnavailable, MaoError, NotFound
from ..executors.backends import Backends
from ..gateway.insights import InsightsPublisher
from ..logs import RUN_ID
from ..merging.pins import Pins, changed_error
from ..merging.registrations import Registrations
from ..merging.voting import Voting
from ..metrics import UNSERVED, Metrics
from ..phases import phase
from ..store import Store
from ..store.backfills import NewBackfill
from ..store.retention import existing_runs
from ..store.run_changes import RunChange, StepChange, StepFacts
from ..store.run_views import RunView
from ..store.runs import NewRun, RunRecords, StepEnd, UnfinishedRun
from ..store.tables import utcnow
from ..store.versions import PipelineVersions
from ..tasks import spawn
from .active import CANCELLED, SHUTDOWN, ActiveRun, Stop, describe, timed_out
from .admission import Admission, Busy, RunInProgress
from .attempt import Adopted, Attempts
from .execution import Execution
from .fanout.attempt import FanOutAttempts
from .pools import Pools
from .retry_start import RetryStart
from .step_logs import StepLogs
from .steps import StepWork
from .strategies import Strategies

__all__ = ["Busy", "RunInProgress", "Runner"]

log = logging.getLogger(__name__)

# A queued run whose start met the database away waits this long before it is admitted again.
REQUEUE_DELAY = 5.0
# How long a run's end is tried again while the database does not answer (``Runner._close``).
CLOSE_PATIENCE = 60.0


class Runner:
    metrics: Metrics = UNSERVED  # the node's, set by Node.build

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registrations: Registrations,
        datasets: Datasets,
        backends: Backends,
        voting: Voting,
        insights: InsightsPublisher,
        pins: Pins,
    ) -> None:
        self.settings = settings
        self.pins = pins
        self.store = store
        self.records = RunRecords(store)
        self.versions = PipelineVersions(store)
        self.registrations = registrations
        self.datasets = datasets
        self.backends = backends
        step_logs = StepLogs(settings.data_dir, lambda ids: existing_runs(self.records.store, ids))
        self.execution = Execution(backends, step_logs, settings.instance_name)
        self.attempts = Attempts(settings, datasets, self.execution, voting, insights, self.records)
        self.fan_out = FanOutAttempts(settings, self.attempts, self.records)
        self.admission = Admission(settings.max_active_runs, self._start_queued)
        self.pools = Pools(settings.pools)
        self.strategies = Strategies(store)
        self.retry_start = RetryStart(self.records, self.versions, pins, datasets)
        self.steps = StepWork(
            settings, pins, datasets, self.execution, self.records, self.attempts, self.fan_out,
            self.pools, self._set_step, self.strategies,
        )  # fmt: skip
        self._runs: dict[str, ActiveRun] = {}  # run id -> run
        self._tasks: dict[str, asyncio.Task[RunView | None]] = {}  # run id -> task
        self._helpers: set[asyncio.Task[Any]] = set()
        self._closing = False  # shutting down: a run's end is not waited for beyond one try

    def active_run(self, pipeline: str) -> str | None:
        """The pipeline's running run, else its first queued one, else None."""
        return self.admission.active_run(pipeline)

    def active_runs(self, pipeline: str) -> list[str]:
        """Every run of ``pipeline`` here, running (oldest first) then queued (in order): several
        running only with overlap ``allow``."""
        return self.admission.active_runs(pipeline)

    def waiting_run(self, pipeline: str) -> str | None:
        """The pipeline's first queued run, or None."""
        return self.admission.waiting_run(pipeline)

    def is_queued(self, run_id: str) -> bool:
        return self.admission.is_queued(run_id)

    async def start(
        self,
        name: str,
        trigger: str,
        schedule_id: str | None = None,
        *,
        priority: int = 0,
        busy: Busy = Busy.REFUSE,
        version: int | None = None,
        retry_of: str | None = None,
        registrations_checked: bool = False,
        **cause: Any,
    ) -> str:
        """Record a run of pipeline ``name``: it starts in the background at once, or waits
        ``queued`` for its turn (``runs/admission.py``); returns its id at once. Raises NotFound (no
        such pipeline here) or RunInProgress (the pipeline is busy and ``busy`` says not to wait).
        ``busy=Busy.ALLOW`` (overlap ``allow``): the run starts beside the pipeline's runs, as the
        instance's limit allows; its steps take a folder of their own when the node branch's is busy.
        ``cause``: what the run stands for, kept on its record: ``tick_at`` (a schedule's or a
        backfill's tick), ``trigger_dataset`` and ``trigger_commit`` (a data trigger's advance).
        ``version``: run that earlier version of the pipeline's definition (NotFound
        ``unknown_version`` if it has none such), queued or not; without it the run takes the
        pipeline as it is when it starts. ``retry_of``: the run this one retries (``runs/retry.py``):
        its done steps are taken over when the run starts. ``registrations_checked``: the caller
        (the API) has just compared the pipeline's registrations with its pins; a run that starts
        at once does not compare them again (a queued one does, when its turn comes)."""
        ticket = Ticket(
            uuid.uuid4().hex, name, trigger, priority, utcnow(), cause.get("tick_at"), schedule_id,
            side_by_side=busy is Busy.ALLOW, version=version, retry_of=retry_of,
        )  # fmt: skip
        now = self.admission.reserve(ticket, busy)  # before any await: two requests cannot both start
        try:
            with phase("run: the pipeline's definition"):
                pipeline, number = await self._pipeline(name, version)
                nodes = pipeline.graph()
            # A queued run takes its version when it starts, unless it asked for one.
            recorded = number if now or version is not None else None
            with phase("db: record the run"):
                await self.records.create_many([self._new_run(ticket, pipeline, nodes, now, cause, recorded)])
        except BaseException:
            self.admission.drop(ticket.run_id)
            raise
        if now:
            self._launch(ticket, pipeline, nodes, RunStatus.PENDING, registrations_checked)
        else:
            log.info("run %s of pipeline %s queued (%s, priority %d)", ticket.run_id, name, trigger, priority)
            self.admission.enqueue([ticket])
        return ticket.run_id

    async def queue_many(
        self,
        name: str,
        trigger: str,
        causes: Sequence[dict[str, Any]],
        priority: int = 0,
        version: int | None = None,
        backfill: NewBackfill | None = None,
    ) -> list[str]:
        """Record runs of ``name`` queued in this order, in one transaction (a backfill's ticks, with
        the ``backfill`` row they belong to); they start one at a time as admission allows, each
        with pipeline ``version`` if given. Their ids."""
        pipeline, _ = await self._pipeline(name, version)
        nodes = pipeline.graph()
        base = utcnow()
        tickets = [
            Ticket(
                uuid.uuid4().hex, name, trigger, priority, base + timedelta(microseconds=i), c.get("tick_at"),
                version=version,
            )  # fmt: skip
            for i, c in enumerate(causes)
        ]
        await self.records.create_many(
            [self._new_run(t, pipeline, nodes, False, c, version) for t, c in zip(tickets, causes, strict=True)],
            backfill,
        )
        self.admission.enqueue(tickets)
        return [t.run_id for t in tickets]

    async def resume(self, record: UnfinishedRun, pipeline: Pipeline, adopted: dict[str, Adopted]) -> None:
        """Take up a run a previous process left unfinished (``reconcile.py`` decided it can be):
        its steps as recorded; each running step goes on from its ``adopted`` attempt, whose object
        is still on its backend; pending steps start as their needs allow. At start, before any
        other run is admitted."""
        statuses = {step.name: StepStatus(step.status) for step in record.steps}
        run = ActiveRun(
            record.id, pipeline, pipeline.graph(), record.status, statuses, priority=record.priority,
            queued_at=record.created_at, side_by_side=record.side_by_side,
        )  # fmt: skip
        for attempt in adopted.values():
            self.execution.claim(run.id, attempt.handle)
        self._runs[run.id] = run
        self.admission.resumed(run.id, pipeline.name)
        task = asyncio.create_task(
            self._execute(run, adopted, started_at=record.started_at), name=f"run {run.id}"
        )
        self._tasks[run.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run.id, None))
        log.info(
            "run %s of pipeline %s resumed (%s)", run.id, pipeline.name,
            ", ".join(f"step {n} attempt {a.number} adopted" for n, a in adopted.items()) or "no step was running",
        )  # fmt: skip

    async def restore_queue(self) -> int:
        """At start, after the reconciler: re-admit the runs a previous process left queued."""
        tickets = await self.records.queued()
        self.admission.enqueue(tickets)
        return len(tickets)

    async def wait(self, run_id: str) -> RunView | None:
        """Until the run has ended and its record is closed (a queued run: first until it leaves
        the queue). Never raises for the run's own sake, however it ended. Returns the record as
        the run's task read it after its close (None when it has none: read it), so that a waiting
        ``POST /pipeline/run`` answers without reading it again."""
        if (leaving := self.admission.leaving(run_id)) is not None:
            await leaving.wait()
        task = self._tasks.get(run_id)
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
        run = self._runs.get(run_id)
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
            await self._stop(run, CANCELLED)

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
            if r in self._runs or (self.admission.leaving(r) is not None and not self.admission.is_queued(r))
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

    async def shutdown(self) -> None:
        """Leave the runs where they are, for the next start to resume (see the module docstring):
        queued runs stay queued; steps whose tool has ended commit and vote (up to 30 s); every
        other step stops waiting, its object running on."""
        self._closing = True
        await self.admission.close()  # queued runs stay queued, for the next start
        self.execution.detaching = True
        for run in self._runs.values():
            run.detaching = True
            for name, task in run.tasks.items():
                if name not in run.voting and name not in run.finishing:
                    task.cancel()
        tasks = list(self._tasks.values())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for run_task in tasks:
            run_task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.execution.close()
        await self.attempts.step_logs.close()

    # -- admission's side -----------------------------------------------------------------------
    async def _pipeline(self, name: str, version: int | None = None) -> tuple[Pipeline, int | None]:
        """The pipeline a run takes (its current definition, or ``version``) and its version number."""
        found = await self.versions.for_run(name, version)
        if found is None:
            raise NotFound(f"pipeline {name!r} is not initialised on this instance (POST /pipeline/init)")
        if version is not None and (missing := found.pipeline.missing_private_values()):
            raise BadRequest(
                f"version {version} of pipeline {name!r} marks private variables this instance holds no "
                f"value for now: {', '.join(missing)} (give them in a step's private_env at an init)",
                code="missing_private_values",
                missing=missing,
            )
        return found.pipeline, found.version

    def _branches(self, pipeline: Pipeline) -> list[str]:
        return [node_branch(s.name, self.settings.instance_name) for s in pipeline.steps]

    def _new_run(
        self,
        ticket: Ticket,
        pipeline: Pipeline,
        nodes: list[StepNode],
        now: bool,
        cause: dict[str, Any],
        version: int | None,
    ) -> NewRun:
        status = RunStatus.PENDING if now else RunStatus.QUEUED
        return NewRun(
            ticket.run_id, pipeline, ticket.trigger, nodes, self._branches(pipeline), status,
            ticket.priority, ticket.queued_at, ticket.schedule_id, cause, ticket.side_by_side, version,
            ticket.retry_of,
        )  # fmt: skip

    def _launch(
        self, ticket: Ticket, pipeline: Pipeline, nodes: list[StepNode], status: RunStatus, checked: bool = False
    ) -> None:
        steps = dict.fromkeys((n.name for n in nodes), StepStatus.PENDING)
        run = ActiveRun(ticket.run_id, pipeline, nodes, status, steps, priority=ticket.priority, queued_at=ticket.queued_at, side_by_side=ticket.side_by_side, retry_of=ticket.retry_of, registrations_checked=checked)  # fmt: skip
        self._runs[run.id] = run
        task = asyncio.create_task(self._execute(run), name=f"run {run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run.id, None))
        self.admission.started(run.id)
        log.info("run %s of pipeline %s started (%s)", run.id, pipeline.name, ticket.trigger)

    async def _start_queued(self, ticket: Ticket) -> None:
        """Admission's launcher: a queued run's turn has come. It runs the pipeline as it is now (or
        the version it asked for). A pipeline (or version) gone fails the run; a database away puts
        it back in the queue for a later try."""
        try:
            pipeline, number = await self._pipeline(ticket.pipeline, ticket.version)
            nodes = pipeline.graph()
            await self.records.restart_steps(
                ticket.run_id, pipeline, nodes, self._branches(pipeline), number
            )
        except DatabaseUnavailable as exc:
            self._requeue(ticket, exc)
            return
        except MaoError as exc:
            log.warning("queued run %s of %s cannot start: %s", ticket.run_id, ticket.pipeline, exc.message)
            try:
                await self.records.change_run(
                    RunChange(ticket.run_id, RunStatus.FAILED, ended_at=utcnow(), error=f"could not start: {exc.message}")
                )
            except MaoError as unrecorded:
                self._requeue(ticket, unrecorded)
                return
            self.admission.finished(ticket.run_id)
            return
        self._launch(ticket, pipeline, nodes, RunStatus.QUEUED)

    def _requeue(self, ticket: Ticket, exc: MaoError) -> None:
        log.warning(
            "queued run %s of %s not started: %s; it stays queued and is tried again in %.0f s",
            ticket.run_id, ticket.pipeline, exc.message, REQUEUE_DELAY,
        )  # fmt: skip
        self.admission.requeue_later(ticket, REQUEUE_DELAY)

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

    # -- one run --------------------------------------------------------------------------------
    async def _execute(
        self, run: ActiveRun, adopted: dict[str, Adopted] | None = None, started_at: datetime | None = None
    ) -> RunView | None:
        """The run's task (``_run``); its result is the run's record as read after its close."""
        await self._run(run, adopted, started_at)
        return run.ended_record

    async def _run(
        self, run: ActiveRun, adopted: dict[str, Adopted] | None = None, started_at: datetime | None = None
    ) -> None:
        """Drive the run's steps, then close its record. Never raises but CancelledError:
        whatever goes wrong, every step ends final and so does the run (``_close``), before the
        task ends and a waiting ``POST /pipeline/run`` reads the record. A run resumed after a
        restart (``adopted``: its running steps' attempts) goes on from where it was; at shutdown
        (``run.detaching``) nothing is closed: the next start takes it up."""
        scratch = self.settings.data_dir / "tmp" / run.id
        timer: asyncio.TimerHandle | None = None
        crash: str | None = None
        # This task's log lines carry the run (MAO_LOG_FORMAT=json); its step tasks inherit it.
        RUN_ID.set(run.id)
        try:
            if run.status is not RunStatus.RUNNING:
                started_at = utcnow()
                with phase("db: run running"):
                    await self._set_run(run, RunChange(run.id, RunStatus.RUNNING, started_at=started_at))
                if not run.registrations_checked:  # the API's check was this run's (``start``)
                    with phase("run: registrations unchanged"):
                        if await self._registrations_changed(run):
                            return
                if run.retry_of is not None:
                    await self._take_over(run)
            if run.pipeline.run_timeout:
                limit = run.pipeline.run_timeout
                spent = (utcnow() - started_at).total_seconds() if started_at else 0.0
                timer = asyncio.get_running_loop().call_later(
                    max(0.0, limit - spent), lambda: self._stop_soon(run, timed_out(limit))
                )
            for name, attempt in (adopted or {}).items():
                run.tasks[name] = asyncio.create_task(
                    self.steps.run(run, name, scratch, attempt), name=f"run {run.id} step {name}"
                )
            await self._drive(run, scratch)
        except asyncio.CancelledError:
            crash = SHUTDOWN.reason
            await self._halt(run)
            raise
        except MaoError as exc:  # the database did not record the start: the run fails, saying so
            log.warning("run %s of %s failed: %s", run.id, run.pipeline.name, exc.message)
            crash = exc.message
            await self._halt(run)
        except Exception as exc:  # noqa: BLE001 - the run still ends, failed, with the error named
            log.exception("run %s of %s failed unexpectedly", run.id, run.pipeline.name)
            crash = f"internal error: {describe(exc)}"
            await self._halt(run)
        finally:
            if timer is not None:
                timer.cancel()
            if not run.detaching:  # a run left for the next start keeps its records and inputs
                # Shielded: a second cancel (shutdown's) must not leave the record half-closed.
                with contextlib.suppress(asyncio.CancelledError), phase("db: close the run"):
                    await asyncio.shield(self._close(run, crash))
            self._runs.pop(run.id, None)
            self.admission.finished(run.id)  # its room goes to the next queued run
            if not run.detaching:
                # Input snapshots can be large, and a tool's tree deep: removed off the event loop.
                with contextlib.suppress(asyncio.CancelledError), phase("run: remove its scratch folder"):
                    await asyncio.shield(asyncio.to_thread(remove_tree, scratch))
                # Counted from the ended run's record (its steps and attempts), whatever the ending.
                with contextlib.suppress(Exception), phase("run: metrics (read the record)"):
                    if (record := await asyncio.shield(self.records.get(run.id))) is not None:
                        self.metrics.observe_run(record.to_json())
                        run.ended_record = record

    async def _registrations_changed(self, run: ActiveRun) -> bool:
        """Fail the run at once, before any step, when a registration it uses changed since its
        operator accepted it (``merging.pins``): no container starts, no secret leaves."""
        try:
            changes = await self.pins.changes(run.pipeline)
        except MaoError:  # etcd away without a local copy, say: each step says so for itself
            return False
        if not changes:
            return False
        reason = changed_error(run.pipeline.name, changes).message
        # Every step skipped in memory; the run ends failed with the reason through ``_close``,
        # the one place a run's record ends.
        run.first_error = reason
        for name in run.steps:
            run.note(name, StepStatus.SKIPPED, error=reason)
        log.warning("run %s of %s not started: %s", run.id, run.pipeline.name, reason)
        return True

    async def _take_over(self, run: ActiveRun) -> None:
        """A retry's start (``runs/retry.py``): the steps the retried run got done, whose output
        ground-truth still holds and that no rerun step feeds, end ``reused`` with that run's
        commits; every step gets its reason; all in one write, before any step starts."""
        assert run.retry_of is not None
        take = await self.retry_start.plan(run)
        now = utcnow()
        written: dict[str, StepEnd | str] = {}
        for planned in take.plan:
            if planned.action is Action.REUSE:
                fields = {**take.fields[planned.step], "reason": planned.reason, "error": None,
                          "started_at": now, "ended_at": now}  # fmt: skip
                run.note(planned.step, StepStatus.REUSED, **fields)
                written[planned.step] = StepEnd(StepStatus.REUSED, fields)
            else:
                run.step_fields.setdefault(planned.step, {})["reason"] = planned.reason
                written[planned.step] = planned.reason
        await self.records.plan_steps(run.id, written)
        log.info(
            "run %s of %s retries run %s: %s", run.id, run.pipeline.name, run.retry_of,
            "; ".join(f"{p.step} {'reused' if p.action is Action.REUSE else 'runs'} ({p.reason})" for p in take.plan),
        )  # fmt: skip

    async def _drive(self, run: ActiveRun, scratch: Path) -> None:
        """Start every step whose needs are met, skip those whose needs failed, until none is left."""
        needs = {n.name: n.needs for n in run.nodes}
        while True:
            changed = True
            while changed and run.stop is None and not run.detaching:
                changed = False
                for name, status in list(run.steps.items()):
                    if status is not StepStatus.PENDING or name in run.tasks:
                        continue
                    states = [run.steps[need] for need in needs[name]]
                    if all(s in DONE_STEP for s in states):
                        run.tasks[name] = asyncio.create_task(
                            self.steps.run(run, name, scratch), name=f"run {run.id} step {name}"
                        )
                    elif any(s in ENDED_STEP and s not in DONE_STEP for s in states):
                        failed = [need for need in needs[name] if run.steps[need] not in DONE_STEP]
                        await self._mark(
                            run,
                            name,
                            StepStatus.SKIPPED,
                            error=f"skipped: {', '.join(failed)} did not succeed",
                        )
                        changed = True
            if not run.tasks:
                break
            done, _ = await asyncio.wait(run.tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            for name in [n for n, t in run.tasks.items() if t in done]:
                await self._reap(run, name, run.tasks.pop(name))
        if run.stop is not None and not run.detaching:
            for name, status in run.steps.items():
                if status is StepStatus.PENDING:
                    await self._mark(run, name, run.stop.pending, error=run.stop.reason)

    async def _reap(self, run: ActiveRun, name: str, task: asyncio.Task[None]) -> None:
        """A step's task has ended: its result is retrieved (never left for asyncio to complain
        about), and a step it left unfinished ends ``failed`` naming why (at shutdown it stays as it
        is, for the next start)."""
        if run.detaching and run.stop is None:
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("run %s: step %s ended unexpectedly", run.id, name, exc_info=exc)
            return
        if task.cancelled():
            problem = None if run.stop is not None else "internal error: the step's task was cancelled"
        elif (exc := task.exception()) is not None:
            log.error("run %s: step %s ended unexpectedly", run.id, name, exc_info=exc)
            problem = f"internal error: {describe(exc)}"
        else:
            problem = None
        if run.steps[name] in ENDED_STEP:
            return
        stop = run.stop
        error = problem or (stop.reason if stop else "internal error: the step ended without a result")
        run.first_error = run.first_error or error
        await self._mark(run, name, stop.step if stop else StepStatus.FAILED, error=error, ended_at=utcnow())

    async def _halt(self, run: ActiveRun) -> None:
        """Cancel the run's step tasks and wait until each has ended (their results retrieved)."""
        tasks = list(run.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for name, task in list(run.tasks.items()):
            run.tasks.pop(name, None)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("run %s: step %s ended unexpectedly", run.id, name, exc_info=exc)

    async def _close(self, run: ActiveRun, crash: str | None) -> None:
        """End the run's record: every step final (one still pending or running, after a crash or a
        shutdown, ends skipped or failed with the reason), its unfinished attempts closed, the run's
        own status, all in one transaction (``RunRecords.close``), tried again while the database
        does not answer (a full disk that a failed step's reset has just freed, a restarting
        PostgreSQL) for up to ``CLOSE_PATIENCE`` seconds. Never raises; a record that still cannot
        be written is closed by the next start (``runs/reconcile.py``)."""
        try:
            final, error = self._final_states(run, crash)
        except Exception:  # noqa: BLE001
            log.exception("run %s: its final state could not be decided", run.id)
            final, error = RunStatus.FAILED, crash or "internal error while ending the run"
        steps = {name: StepEnd(status, run.step_fields.get(name, {})) for name, status in run.steps.items()}
        fields: dict[str, Any] = {"error": error, "ended_at": utcnow()}
        reason = (run.stop.reason if run.stop else None) or crash or "the step ended without a result"
        attempts = run.stop.attempt if run.stop else AttemptStatus.CANCELLED
        deadline = asyncio.get_running_loop().time() + CLOSE_PATIENCE
        delay = 0.2
        while True:
            try:
                ended = list(run.attempt_ends.values())
                await self.records.close(run.id, final, fields, steps, attempts, reason, ended)
                break
            except Exception as exc:  # noqa: BLE001 - the database away, or a bug: tried again either way
                problem = exc.message if isinstance(exc, MaoError) else describe(exc)
                if self._closing or asyncio.get_running_loop().time() + delay > deadline:
                    log.error(
                        "run %s: its end was not recorded (%s); the next start closes it", run.id, problem
                    )
                    return
                log.warning(
                    "run %s: its end not recorded yet (%s); again in %.1f s",
                    run.id,
                    problem,
                    delay,
                    exc_info=not isinstance(exc, MaoError),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if run.stop is not None:
            log.info("run %s of %s stopped: %s", run.id, run.pipeline.name, run.stop.reason)
        elif final is RunStatus.SUCCEEDED:
            log.info("run %s of %s succeeded (%d steps)", run.id, run.pipeline.name, len(run.steps))
        else:
            log.info("run %s of %s failed: %s", run.id, run.pipeline.name, error)

    def _final_states(self, run: ActiveRun, crash: str | None) -> tuple[RunStatus, str | None]:
        """In memory: every step final, and the run's status and error."""
        error: str | None
        reason = (run.stop.reason if run.stop else None) or crash
        for name, status in run.steps.items():
            if status is StepStatus.PENDING:
                end = run.stop.pending if run.stop else StepStatus.SKIPPED
                run.note(name, end, error=reason or "skipped: the run ended before it started")
            elif status is StepStatus.RUNNING:
                end = run.stop.step if run.stop else StepStatus.FAILED
                error = reason or "internal error: the step ended without a result"
                run.first_error = run.first_error or error
                run.note(name, end, error=error, ended_at=utcnow())
        if run.stop is not None:
            final, error = run.stop.run, run.stop.reason
        elif crash is not None:
            final, error = RunStatus.FAILED, crash
        elif any(s not in DONE_STEP for s in run.steps.values()):
            final, error = RunStatus.FAILED, run.first_error or "a step did not succeed"
        else:
            final, error = RunStatus.SUCCEEDED, None
        run.status = check(RUN_TRANSITIONS, run.status, final)
        return final, error

    # -- stopping -------------------------------------------------------------------------------
    def _stop_soon(self, run: ActiveRun, stop: Stop) -> None:
        if run.stop is None and run.id in self._runs:
            spawn(self._stop(run, stop), f"stop run {run.id}", self._helpers)

    async def _stop(self, run: ActiveRun, stop: Stop) -> None:
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

    # -- records --------------------------------------------------------------------------------
    async def _set_run(self, run: ActiveRun, change: RunChange) -> None:
        run.status = check(RUN_TRANSITIONS, run.status, change.status)
        await self.records.change_run(change)

    async def _set_step(self, run: ActiveRun, name: str, status: StepStatus, **fields: Any) -> None:
        """The step's new status, in memory first, then in its record (raises when that fails: the
        run's end writes it again, ``_close``). A succeeded attempt of the step whose end is not
        recorded yet is recorded with it, in one transaction."""
        run.note(name, status, **fields)
        ended = run.attempt_ends.get(name)
        await self.records.change_step(StepChange(run.id, name, status, StepFacts(**fields)), ended)
        if ended is not None and run.attempt_ends.get(name) is ended:
            del run.attempt_ends[name]

    async def _mark(self, run: ActiveRun, name: str, status: StepStatus, **fields: Any) -> None:
        """``_set_step`` for the engine's own decisions (skip, stop): a record that cannot be
        written now is written at the run's end; it never stops the drive."""
        try:
            await self._set_step(run, name, status, **fields)
        except MaoError as exc:
            log.warning("run %s: step %s %s, not recorded yet: %s", run.id, name, status, exc.message)
