"""An active run's record: its run and step changes as they happen, and its end (every step final,
the run's own status) written in one transaction, tried again while the database does not answer.

The in-memory ``ActiveRun`` is the truth; the record follows it. A step change that cannot be
written when it happens is written again by the run's end (``Recorder.close``), from the fields the
run kept (``ActiveRun.step_fields``, ``ActiveRun.attempt_ends``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ..domain.states import (
    DONE_STEP,
    ENDED_STEP,
    RUN_TRANSITIONS,
    AttemptStatus,
    IllegalTransition,
    RunStatus,
    StepStatus,
    check,
)
from ..errors import MaoError
from ..retry import Backoff
from ..store.run_changes import RunChange, StepChange, StepFacts
from ..store.run_views import RunView
from ..store.runs import RunEnd, RunRecords, StepEnd
from ..store.tables import utcnow
from .active import ActiveRun, describe

log = logging.getLogger(__name__)

# How long a run's end is tried again while the database does not answer (``Recorder.close``).
CLOSE_PATIENCE = 60.0


@dataclass(eq=False)  # identity: one per engine, its bound methods are callbacks
class Recorder:
    """Writes an active run's changes to its record (``RunRecords``)."""

    records: RunRecords
    closing: bool = False  # shutting down: a run's end is not waited for beyond one try

    async def set_run(self, run: ActiveRun, change: RunChange) -> None:
        run.status = check(RUN_TRANSITIONS, run.status, change.status)
        await self.records.change_run(change)

    async def set_step(self, run: ActiveRun, name: str, status: StepStatus, **fields: Any) -> None:
        """The step's new status, in memory first, then in its record (raises when that fails: the
        run's end writes it again, ``close``). A succeeded attempt of the step whose end is not
        recorded yet is recorded with it, in one transaction.

        The end of the run's last step is not written here: the run's close follows at once and
        writes it in its own transaction (``RunRecords.close``: open step records get their end,
        with the attempt ends not recorded yet), one transaction instead of two. A kill between
        the two leaves what a kill just before this write left: the step running, its output
        committed and voted (the next start finds its merge, ``runs/reconcile.py``)."""
        run.note(name, status, **fields)
        if not run.detaching and run.stop is None and all(s in ENDED_STEP for s in run.steps.values()):
            run.left_for_close.add(name)
            return
        await self._write_step(run, name, status, **fields)

    async def write_left(self, run: ActiveRun) -> None:
        """The step ends left for a close that will not come (shutting down: the run is left for
        the next start), each written on its own now. Never raises: one not written is the next
        start's to settle, as a kill's would be."""
        for name in sorted(run.left_for_close):
            try:
                await self._write_step(run, name, run.steps[name], **run.step_fields.get(name, {}))
            except Exception as exc:  # noqa: BLE001 - left as a kill would leave it
                log.warning("run %s: the end of step %s was not recorded: %s", run.id, name, describe(exc))
        run.left_for_close.clear()

    async def _write_step(self, run: ActiveRun, name: str, status: StepStatus, **fields: Any) -> None:
        ended = run.attempt_ends.get(name)
        await self.records.change_step(StepChange(run.id, name, status, StepFacts(**fields)), ended)
        if ended is not None and run.attempt_ends.get(name) is ended:
            del run.attempt_ends[name]

    async def mark(self, run: ActiveRun, name: str, status: StepStatus, **fields: Any) -> None:
        """``set_step`` for the engine's own decisions (skip, stop): a record that cannot be
        written now is written at the run's end; it never stops the drive."""
        try:
            await self.set_step(run, name, status, **fields)
        except MaoError as exc:
            log.warning("run %s: step %s %s, not recorded yet: %s", run.id, name, status, exc.message)

    async def close(self, run: ActiveRun, crash: str | None) -> RunView | None:
        """End the run's record: every step final (one still pending or running, after a crash or a
        shutdown, ends skipped or failed with the reason), its unfinished attempts closed, the run's
        own status, all in one transaction (``RunRecords.close``), tried again while the database
        does not answer (a full disk that a failed step's reset has just freed, a restarting
        PostgreSQL) for up to ``CLOSE_PATIENCE`` seconds (only once when ``closing``: shutting down).
        A transition the tables refuse (``IllegalTransition``: a bug, the same on every try) is
        not tried again. Returns the ended record as the close's transaction read it (None when it
        was not written). Never raises; a record that still cannot be written is closed by the
        next start (``runs/reconcile.py``)."""
        try:
            final, error = final_states(run, crash)
        except Exception:  # noqa: BLE001
            log.exception("run %s: its final state could not be decided", run.id)
            final, error = RunStatus.FAILED, crash or "internal error while ending the run"
        steps = {name: StepEnd(status, run.step_fields.get(name, {})) for name, status in run.steps.items()}
        run_end = RunEnd(final, error, utcnow())
        reason = (run.stop.reason if run.stop else None) or crash or "the step ended without a result"
        attempts = run.stop.attempt if run.stop else AttemptStatus.CANCELLED
        deadline = asyncio.get_running_loop().time() + CLOSE_PATIENCE
        backoff = Backoff(0.2, 10.0, jitter=False)  # one run's own record: no herd to spread
        while True:
            try:
                ended = list(run.attempt_ends.values())
                record = await self.records.close(run.id, run_end, steps, attempts, reason, ended)
                break
            except IllegalTransition as exc:  # not an outage: every try would meet the same refusal
                log.error("run %s: its end was not recorded (%s); the next start closes it", run.id, exc)
                return None
            except Exception as exc:  # noqa: BLE001 - the database away, or a bug: tried again either way
                problem = exc.message if isinstance(exc, MaoError) else describe(exc)
                delay = backoff.peek()
                if self.closing or asyncio.get_running_loop().time() + delay > deadline:
                    log.error(
                        "run %s: its end was not recorded (%s); the next start closes it", run.id, problem
                    )
                    return None
                log.warning(
                    "run %s: its end not recorded yet (%s); again in %.1f s",
                    run.id,
                    problem,
                    delay,
                    exc_info=not isinstance(exc, MaoError),
                )
                await asyncio.sleep(backoff.next())
        if run.stop is not None:
            log.info("run %s of %s stopped: %s", run.id, run.pipeline.name, run.stop.reason)
        elif final is RunStatus.SUCCEEDED:
            log.info("run %s of %s succeeded (%d steps)", run.id, run.pipeline.name, len(run.steps))
        else:
            log.info("run %s of %s failed: %s", run.id, run.pipeline.name, error)
        run.left_for_close.clear()  # written with the run's end
        return record


def final_states(run: ActiveRun, crash: str | None) -> tuple[RunStatus, str | None]:
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
