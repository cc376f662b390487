"""One step of a run: its pool slot, the cache check, its attempts (retries, fallback tool) or its
fan-out, and its record. The run's driver (``drive.py``) walks the graph and calls ``StepWork.run``
for each step whose needs are met; this module never decides which step runs next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Settings
from ..datasets import Datasets
from ..domain.pipeline import Step, Tool, node_branch
from ..domain.states import ATTEMPT_TRANSITIONS, ENDED_STEP, AttemptStatus, StepStatus, check
from ..domain.strategy import Verdict, judge
from ..errors import MaoError
from ..executors.seam import EndKind, Identity
from ..logs import STEP
from ..merging.pins import Pins
from ..phases import phase
from ..retry import backoff
from ..store.run_changes import AttemptEnded, NewAttempt
from ..store.runs import RunRecords
from ..store.tables import utcnow
from .active import SHUTDOWN, ActiveRun, describe
from .attempt import Adopted, AttemptOutcome, Attempts, StepContext
from .cache import memo_key
from .execution import Execution, where_it_ran
from .fanout.attempt import FanOutAttempts, FanOutPass
from .pools import Pools
from .spec import backend_of
from .step_failure import StepFailed, classify
from .strategies import Strategies

log = logging.getLogger(__name__)


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

SetStep = Callable[..., Awaitable[None]]  # (run, step name, status, **fields): the checked record write


class StepWork:
    def __init__(
        self,
        settings: Settings,
        pins: Pins,
        datasets: Datasets,
        execution: Execution,
        records: RunRecords,
        attempts: Attempts,
        fan_out: FanOutAttempts,
        pools: Pools,
        set_step: SetStep,
        strategies: Strategies,
    ) -> None:
        self.settings = settings
        self.pins = pins
        self.datasets = datasets
        self.execution = execution
        self.records = records
        self.attempts = attempts
        self.fan_out = fan_out
        self.pools = pools
        self.set_step = set_step
        self.strategies = strategies

    async def run(self, run: ActiveRun, name: str, scratch: Path, adopted: Adopted | None = None) -> None:
        """Run one step to its end and record it; never raises (the step's status says it all).
        ``adopted``: the step was running when a previous process stopped, and its attempt's object
        is still on its backend: the step goes on from that attempt.

        Whatever goes wrong ends the step ``failed`` naming the error: a failure an attempt
        expected (``StepFailed``), a library error (``MaoError``: a lookup, the database) and any
        other exception alike (``internal error: <type>: <message>``, logged with its traceback).
        A record write that fails here leaves the in-memory status final; the engine writes it
        when the run ends (``Recorder.close``)."""
        STEP.set(name)  # this step's own task: its (and its attempts') log lines carry the step
        started_at = utcnow()
        try:
            done = await self._work(run, name, scratch, started_at, adopted)
        except StepFailed as failure:
            await self._end(run, name, failure.status, failure.message)
            return
        except asyncio.CancelledError:
            if run.stop is None and run.detaching:
                raise  # left as it is (running) for the next start
            stop = run.stop or SHUTDOWN
            with contextlib.suppress(Exception):
                await asyncio.shield(self._end(run, name, stop.step, stop.reason, first=False))
            if run.stop is None:
                raise
            return
        except MaoError as exc:  # a lookup (registrations, database) failed outside an attempt
            await self._end(run, name, StepStatus.FAILED, exc.message)
            return
        except OSError as exc:  # the file system refused (a full disk says so): no bug, a cause
            log.warning("run %s: step %s failed: %s", run.id, name, describe(exc))
            await self._end(run, name, StepStatus.FAILED, describe(exc))
            return
        except Exception as exc:  # noqa: BLE001 - no exception may leave a step running
            log.exception("run %s: step %s failed unexpectedly", run.id, name)
            await self._end(run, name, StepStatus.FAILED, f"internal error: {describe(exc)}")
            return
        if done is not None:
            try:
                with phase("db: step and attempt succeeded"):
                    await self.set_step(run, name, StepStatus.SUCCEEDED, ended_at=utcnow(), **done)
            except Exception as exc:  # noqa: BLE001 - recorded at the run's end (memory is final)
                log.warning("run %s: step %s succeeded but its record was not written yet: %s",
                            run.id, name, getattr(exc, "message", exc))  # fmt: skip

    async def _end(
        self, run: ActiveRun, name: str, status: StepStatus, error: str, *, first: bool = True
    ) -> None:
        """Record the step's unsuccessful end; never raises. A step already final in memory (its
        ``cached`` record failed to write) keeps that status: the engine writes it at the run's end."""
        if first:
            run.first_error = run.first_error or error
        if run.steps[name] in ENDED_STEP:
            log.warning("run %s: step %s stays %s (then: %s)", run.id, name, run.steps[name], error)
            return
        log.info("run %s: step %s %s: %s", run.id, name, status, error)
        try:
            await self.set_step(run, name, status, error=error, ended_at=utcnow())
        except Exception as exc:  # noqa: BLE001 - recorded at the run's end
            log.warning("run %s: the end of step %s was not recorded yet: %s",
                        run.id, name, getattr(exc, "message", exc))  # fmt: skip

    async def _work(
        self, run: ActiveRun, name: str, scratch: Path, started_at: datetime, adopted: Adopted | None = None
    ) -> dict[str, Any] | None:
        """The step's work up to its success; the fields of its ``succeeded`` record, or None when
        it is already recorded (``cached``). Raises on failure."""
        step = run.pipeline.step(name)
        position = run.pipeline.steps.index(step)
        # Through the pins: a registration changed since the pipeline was initialised (or its
        # changes last accepted) is not used (RegistrationChanged, the step fails naming it).
        scope = run.pipeline.name
        with phase("step: pinned registrations"):
            output = await self.pins.dataset(scope, step.output_dataset)
            source = await self.pins.dataset(scope, step.input_dataset) if step.input_dataset else None
            tool = await self._tool(run, step.tool)
        ctx = StepContext(
            run.id,
            run.pipeline.name,
            position,
            step,
            output,
            source,
            node_branch(name, self.settings.instance_name),
            side_by_side=run.side_by_side,
        )
        # Checked while still pending: a cache hit is one write, pending -> cached.
        if adopted is None and step.cache and await self._use_cache(run, ctx, tool, started_at):
            return None
        async with self._pool(run, step):  # pending while it waits for a slot
            if step.fan_out is not None:
                with phase("db: step running"):
                    await self.set_step(run, name, StepStatus.RUNNING, started_at=utcnow())
                outcome, used = await self._fan_out(run, ctx, tool, scratch), tool
            else:  # running from its first attempt's record (``_attempt``: one write for both)
                outcome, used = await self._attempts(run, ctx, tool, scratch, adopted)
        run.input_tips.pop(step.output_dataset, None)
        key = None
        if outcome.image_id:
            key = memo_key(step, used.name, outcome.image_id, outcome.input_commit)
        return {
            "merge_commit": outcome.merge_commit,
            "merge_state": outcome.merge_state,
            "insights": outcome.insights,
            "cache_key": key,
        }

    async def _tool(self, run: ActiveRun, name: str) -> Tool:
        # From etcd, or this instance's copy while etcd is unreachable (a run needs no quorum), and
        # only as the pipeline's pin says: never an image swapped in since.
        return await self.pins.tool(run.pipeline.name, name)

    async def _attempts(
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
            current = tool if name == tool.name else await self._tool(run, name)
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

    async def _fan_out(self, run: ActiveRun, ctx: StepContext, tool: Tool, scratch: Path) -> AttemptOutcome:
        """A fan-out step (runs/fanout/attempt.py): its shards are retried on their own; a failure
        outside them that can pass (a git remote away at the snapshot or the vote) runs the step
        again, up to ``retries`` times, with the usual backoff."""
        step = ctx.step
        fallback = await self._tool(run, step.fallback_tool) if step.fallback_tool else None
        this_pass = FanOutPass()
        for retry in range(step.retries + 1):
            try:
                return await self.fan_out.run(
                    ctx,
                    tool,
                    fallback,
                    scratch,
                    voting=lambda: run.voting.add(step.name),
                    stop_reason=lambda: run.stop.reason if run.stop else None,
                    this_pass=this_pass,
                )
            except StepFailed as exc:
                if not exc.passable or retry == step.retries:
                    raise
                delay = backoff(retry + 1, step.retry_delay)
                log.info(
                    "run %s: fan-out step %s failed outside its shards (%s); again in %.1f s",
                    run.id, step.name, exc.message, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                this_pass = this_pass.next()
            finally:
                run.voting.discard(step.name)
        raise AssertionError("unreachable: the last pass returns or raises")

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

    async def _use_cache(self, run: ActiveRun, ctx: StepContext, tool: Tool, started_at: datetime) -> bool:
        """Record the step ``cached`` when its memo key matches its last success here."""
        image_id = run.image_ids.get(tool.image)
        if image_id is None:
            backend = self.execution.backends.get(backend_of(ctx.step, self.settings))
            image_id = await backend.resolve_image(tool.image)
            if image_id is None:
                return False
            run.image_ids[tool.image] = image_id
        input_commit = None
        if ctx.source is not None:
            input_commit = run.input_tips.get(ctx.source.name)
            if input_commit is None:
                input_commit = await self.datasets.sync(ctx.source.name, ctx.source.master)
                run.input_tips[ctx.source.name] = input_commit
        key = memo_key(ctx.step, tool.name, image_id, input_commit)
        hit = await self.records.cached_output(run.pipeline.name, ctx.step.name, key)
        if hit is None:
            return False
        await self.set_step(
            run,
            ctx.step.name,
            StepStatus.CACHED,
            image=tool.image,
            image_id=image_id,
            input_commit=input_commit,
            output_commit=hit.output_commit,
            merge_commit=hit.merge_commit,
            cache_key=key,
            error=None,
            started_at=started_at,
            ended_at=utcnow(),
        )
        log.info("run %s: step %s cached (same inputs as run %s)", run.id, ctx.step.name, hit.run_id)
        return True

    def _pool(self, run: ActiveRun, step: Step) -> AbstractAsyncContextManager[None]:
        """A slot of the step's pool, held while the step runs (``runs/pools.py``)."""
        if step.pool is None:
            return contextlib.nullcontext()
        slots = self.pools.get(step.pool)
        if slots is None:
            raise StepFailed(f"pool {step.pool!r} is not configured on this instance (MAO_POOLS)")
        return slots.hold(run.order())
