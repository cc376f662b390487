"""One run's task: walk its step graph until every step has ended, then close its record.

A step starts when every step it ``needs`` has succeeded (or was ``cached``/``reused``); steps
whose needs are met run side by side (each step's work: ``runs/steps.py``). A step whose need did
not succeed is ``skipped``; steps that do not depend on a failed one still run, and the run fails
once everything that can run has. Before the first step: the run is recorded ``running``, its
registrations are compared with its pins (unless the API just did), and a retry takes over the
retried run's done steps (``runs/retry_start.py``). A run resumed after a restart goes on from its
adopted attempts; at shutdown (``run.detaching``) nothing is closed: the next start takes it up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..config import Settings
from ..datasets.trees import remove_tree
from ..domain.retry import Action
from ..domain.states import DONE_STEP, ENDED_STEP, RunStatus, StepStatus
from ..errors import MaoError
from ..logs import RUN_ID
from ..merging.pins import Pins, changed_error
from ..metrics import UNSERVED, Metrics
from ..phases import phase
from ..store.run_changes import RunChange
from ..store.run_views import RunView
from ..store.runs import RunRecords, StepEnd
from ..store.tables import utcnow
from .active import SHUTDOWN, ActiveRun, LiveRuns, describe, timed_out
from .admission import Admission
from .attempt import Adopted
from .recording import Recorder
from .retry_start import RetryStart
from .steps import StepWork
from .stopping import Stopper

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: one per engine, its bound methods are callbacks
class Driver:
    """Executes runs (``execute``: a run's task, from its start or its resumption to its close)."""

    settings: Settings
    pins: Pins
    records: RunRecords
    live: LiveRuns
    admission: Admission
    steps: StepWork
    recorder: Recorder
    stopper: Stopper
    retry_start: RetryStart
    metrics: Metrics = UNSERVED  # the node's, through ``Runner.metrics``

    async def execute(
        self,
        run: ActiveRun,
        adopted: dict[str, Adopted] | None = None,
        started_at: datetime | None = None,
        *,
        starting: bool = False,
    ) -> RunView | None:
        """The run's task (``_run``); its result is the run's record as read after its close."""
        await self._run(run, adopted, started_at, starting)
        return run.ended_record

    async def _run(
        self,
        run: ActiveRun,
        adopted: dict[str, Adopted] | None = None,
        started_at: datetime | None = None,
        starting: bool = False,
    ) -> None:
        """Drive the run's steps, then close its record. Never raises but CancelledError:
        whatever goes wrong, every step ends final and so does the run (``Recorder.close``), before
        the task ends and a waiting ``POST /pipeline/run`` reads the record. A run resumed after a
        restart (``adopted``: its running steps' attempts) goes on from where it was; at shutdown
        (``run.detaching``) nothing is closed: the next start takes it up. A run that starts
        (``starting``: not resumed) may have been recorded running already, when it was recorded
        (``Launcher``): its start is not written twice."""
        scratch = self.settings.data_dir / "tmp" / run.id
        timer: asyncio.TimerHandle | None = None
        crash: str | None = None
        # This task's log lines carry the run (MAO_LOG_FORMAT=json); its step tasks inherit it.
        RUN_ID.set(run.id)
        try:
            if starting or run.status is not RunStatus.RUNNING:
                if run.status is not RunStatus.RUNNING:
                    started_at = utcnow()
                    with phase("db: run running"):
                        await self.recorder.set_run(run, RunChange(run.id, RunStatus.RUNNING, started_at=started_at))
                if not run.registrations_checked:  # the API's check was this run's (``Runner.start``)
                    with phase("run: registrations unchanged"):
                        if await self._registrations_changed(run):
                            return
                if run.retry_of is not None:
                    await self._take_over(run)
            if run.pipeline.run_timeout:
                limit = run.pipeline.run_timeout
                spent = (utcnow() - started_at).total_seconds() if started_at else 0.0
                timer = asyncio.get_running_loop().call_later(
                    max(0.0, limit - spent), lambda: self.stopper.stop_soon(run, timed_out(limit))
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
            ended: RunView | None = None
            if not run.detaching:  # a run left for the next start keeps its records and inputs
                # Shielded: a second cancel (shutdown's) must not leave the record half-closed.
                with contextlib.suppress(asyncio.CancelledError), phase("db: close the run"):
                    ended = await asyncio.shield(self.recorder.close(run, crash))
            elif run.left_for_close:  # the close that was to write them will not come
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self.recorder.write_left(run))
            self.live.runs.pop(run.id, None)
            self.admission.finished(run.id)  # its room goes to the next queued run
            if not run.detaching:
                # Input snapshots can be large, and a tool's tree deep: removed off the event loop.
                with contextlib.suppress(asyncio.CancelledError), phase("run: remove its scratch folder"):
                    await asyncio.shield(asyncio.to_thread(remove_tree, scratch))
                # Counted from the ended run's record (its steps and attempts), whatever the ending:
                # as the close read it in its transaction, else (not written) as it stands.
                with contextlib.suppress(Exception), phase("run: metrics (read the record)"):
                    if (record := ended or await asyncio.shield(self.records.get(run.id))) is not None:
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
        # Every step skipped in memory; the run ends failed with the reason through
        # ``Recorder.close``, the one place a run's record ends.
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
            "; ".join(f"{p.step} {StepStatus.REUSED if p.action is Action.REUSE else 'runs'} ({p.reason})" for p in take.plan),
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
                        await self.recorder.mark(
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
                    await self.recorder.mark(run, name, run.stop.pending, error=run.stop.reason)

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
        await self.recorder.mark(run, name, stop.step if stop else StepStatus.FAILED, error=error, ended_at=utcnow())

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
