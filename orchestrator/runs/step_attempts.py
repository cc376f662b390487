"""A plain step's attempts: its tool chain (its tool, or the one its strategy's watcher starts with,
then ``fallback_tool`` or the strategy's replacements), each tool's retries with backoff, and each
attempt recorded (its start in one write; a success's end left for the step's end to write with it).

``StepWork`` (``runs/steps.py``) calls ``StepAttempts.run`` for a step that is not a fan-out, once its
pool slot is held and the cache did not answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..domain.pipeline import Tool
from ..domain.states import ATTEMPT_TRANSITIONS, AttemptStatus, StepStatus, check
from ..domain.strategy import Verdict, judge
from ..errors import MaoError
from ..executors.seam import EndKind, Identity
from ..phases import phase
from ..retry import backoff
from ..store.run_changes import AttemptEnded, NewAttempt
from ..store.runs import RunRecords
from ..store.tables import utcnow
from .active import SHUTDOWN, ActiveRun
from .attempt import Adopted, AttemptOutcome, Attempts, StepContext
from .execution import where_it_ran
from .spec import backend_of
from .step_failure import StepFailed, classify
from .strategies import Strategies

log = logging.getLogger(__name__)

# A registered tool by name, as the run's pins say (``StepWork._tool``).
ToolLookup = Callable[[ActiveRun, str], Awaitable[Tool]]


@dataclass(frozen=True)
class _Series:
    """How one tool's attempts in a step ended: the last attempt's number, and its outcome (with the
    seconds the tool ran, for ``degraded_when``) or its failure."""

    number: int
    outcome: AttemptOutcome | None = None
    seconds: float = 0.0
    failure: StepFailed | None = None


# The ends a strategy's watcher counts against a tool: its own. A backend, git or database away, a
# lost node or unschedulable work, and a cancel, are not the tool's (the run still goes on with the
# next tool, as fallback_tool always did).
TOOL_FAILURES = frozenset(
    {EndKind.FAILED, EndKind.OOM_KILLED, EndKind.TIMED_OUT, EndKind.STALLED, EndKind.IMAGE_UNAVAILABLE}
)


@dataclass(eq=False)
class StepAttempts:
    """Runs a plain step's attempts to its outcome, or raises its failure (``StepFailed``)."""

    settings: Settings
    attempts: Attempts
    records: RunRecords
    strategies: Strategies
    tool: ToolLookup

    async def run(
        self, run: ActiveRun, ctx: StepContext, tool: Tool, scratch: Path, adopted: Adopted | None = None
    ) -> tuple[AttemptOutcome, Tool]:
        """The step's attempts: ``1 + retries`` with the first tool of its plan (its tool, or the one
        its strategy's watcher starts with), then once with each tool after it (``fallback_tool``, or
        the strategy's replacements); the outcome and the tool that made it. Each tool's outcome is
        counted by the watcher. An adopted attempt takes its place in that series (its number says
        where: beyond ``1 + retries``, a later tool's one attempt)."""
        step = ctx.step
        chain = step.tools()
        first_series = step.retries + 1
        if adopted is not None:
            order = tuple(chain[chain.index(adopted.tool) :]) if adopted.tool in chain else (adopted.tool,)
            tries = first_series - (adopted.number - 1) if adopted.number <= first_series else 1
            number = adopted.number - 1
        else:
            order = (await self.strategies.plan(run.pipeline.name, step)).order
            tries, number = first_series, 0
        failures: list[str] = []
        for index, name in enumerate(order):
            current = tool if name == tool.name else await self.tool(run, name)
            if index > 0:
                log.info("run %s: step %s falls back to tool %s", run.id, step.name, name)
            series = await self._series(run, ctx, current, scratch, number, tries if index == 0 else 1, adopted)
            adopted, number = None, series.number
            if series.failure is None:
                assert series.outcome is not None
                verdict, detail = judge(step.degraded_when, series.seconds, series.outcome.insight_values)
                await self.strategies.outcome(run.pipeline.name, step, name, verdict, detail)
                return series.outcome, current
            failure = series.failure
            if failure.end is not None and failure.end.kind in TOOL_FAILURES:
                await self.strategies.outcome(run.pipeline.name, step, name, Verdict.FAILED, failure.message)
            failures.append(failure.message if index == 0 else f"fallback tool {name}: {failure.message}")
            if failure.status is not StepStatus.FAILED or index == len(order) - 1:
                if len(failures) == 1:
                    raise failure
                raise StepFailed("; ".join(failures), status=failure.status) from failure
        raise AssertionError("unreachable: the last tool returns or raises")

    async def _series(
        self,
        run: ActiveRun,
        ctx: StepContext,
        tool: Tool,
        scratch: Path,
        number: int,
        tries: int,
        adopted: Adopted | None,
    ) -> _Series:
        """Up to ``tries`` attempts with ``tool`` (retried only when the failure can pass), numbered
        after ``number``: the successful one and how long it took, or the last failure."""
        failure: StepFailed | None = None
        for retry in range(tries):
            number += 1
            began = time.monotonic()
            try:
                resumed = adopted if retry == 0 else None
                outcome = await self._attempt(run, ctx, number, tool, scratch, resumed)
                # The tool's own run time when its backend says it (no queue, commit or vote in it).
                ran = outcome.end.run_seconds if outcome.end is not None else None
                return _Series(number, outcome, ran if ran is not None else time.monotonic() - began)
            except StepFailed as exc:
                failure = exc
                if not exc.passable or retry == tries - 1:
                    break
                delay = backoff(retry + 1, ctx.step.retry_delay)
                log.info(
                    "run %s: step %s attempt %d failed (%s); retrying in %.1f s",
                    run.id, ctx.step.name, number, exc.message, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
        return _Series(number, failure=failure)

    async def _attempt(
        self,
        run: ActiveRun,
        ctx: StepContext,
        number: int,
        tool: Tool,
        scratch: Path,
        adopted: Adopted | None = None,
    ) -> AttemptOutcome:
        """One attempt, recorded: its start is one write (the attempt's row, the input commit it
        took, and the step's own start when it is its first); a success's end is left in
        ``run.attempt_ends`` for the step's end to write with it (``Recorder.set_step``)."""
        snapshot: tuple[Path | None, str | None] = (None, None)
        unsnapped: Exception | None = None
        if adopted is None:
            try:
                with phase("step: input snapshot"):
                    snapshot = await self.attempts.snapshot_input(ctx, scratch / f"{ctx.position}-{number}")
            except Exception as exc:  # noqa: BLE001 - recorded as this attempt's failure, below
                unsnapped = exc
            attempt_id = await self._record_start(run, ctx, number, tool, snapshot[1])
        else:
            attempt_id = adopted.attempt_id
        status = AttemptStatus.RUNNING
        try:
            if unsnapped is not None:
                raise classify(unsnapped) if isinstance(unsnapped, MaoError) else unsnapped
            outcome = await self.attempts.run(
                ctx,
                number,
                tool,
                scratch,
                voting=lambda: run.voting.add(ctx.step.name),
                adopted=adopted,
                finishing=lambda: run.finishing.add(ctx.step.name),
                snapshot=snapshot,
            )
        except StepFailed as failure:
            status = check(ATTEMPT_TRANSITIONS, status, failure.attempt_status)
            try:
                await self.records.end_attempt(
                    AttemptEnded(
                        attempt_id, status, exit_code=failure.exit_code, image_id=failure.image_id,
                        error=failure.message, **where_it_ran(failure.end),
                    )  # fmt: skip
                )
            except MaoError as exc:  # the failure is what the step says; the run's end closes the row
                log.warning("run %s: attempt %d of step %s not recorded yet: %s",
                            run.id, number, ctx.step.name, exc.message)  # fmt: skip
            raise
        except asyncio.CancelledError:
            if run.stop is not None or not run.detaching:
                stop = run.stop or SHUTDOWN
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self.records.end_attempt(AttemptEnded(attempt_id, stop.attempt, error=stop.reason))
                    )
            raise
        finally:
            run.voting.discard(ctx.step.name)
            run.finishing.discard(ctx.step.name)
        status = check(ATTEMPT_TRANSITIONS, status, AttemptStatus.SUCCEEDED)
        run.attempt_ends[ctx.step.name] = AttemptEnded(
            attempt_id, status, exit_code=0, image_id=outcome.image_id, **where_it_ran(outcome.end)
        )
        return outcome

    async def _record_start(
        self, run: ActiveRun, ctx: StepContext, number: int, tool: Tool, input_commit: str | None
    ) -> int:
        """The attempt's row (its object's name, before the object exists: a restart finds it),
        with the step's start when the step is still pending, in one write; the attempt's id."""
        identity = Identity(
            instance=self.settings.instance_name, pipeline=ctx.pipeline, run=run.id,
            step=ctx.step.name, position=ctx.position, attempt=number,
        )  # fmt: skip
        attempt = NewAttempt(
            run.id, ctx.step.name, number, tool.name, identity.object_name(),
            backend=backend_of(ctx.step, self.settings),
        )  # fmt: skip
        started = None
        if run.steps[ctx.step.name] is StepStatus.PENDING:
            started = utcnow()
            run.note(ctx.step.name, StepStatus.RUNNING, started_at=started)
        with phase("db: step running, attempt recorded"):
            return await self.records.start_attempt(attempt, step_started=started, input_commit=input_commit)
