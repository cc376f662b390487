"""One step of a run: its pool slot, the cache check, its attempts (``step_attempts.py``) or its
fan-out, and its record. The run's driver (``drive.py``) walks the graph and calls ``StepWork.run``
for each step whose needs are met; this module never decides which step runs next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Settings
from ..datasets import Datasets
from ..domain.pipeline import Dataset, Step, Tool, node_branch
from ..domain.states import ENDED_STEP, StepStatus
from ..errors import MaoError
from ..logs import STEP
from ..merging.pins import Pins
from ..phases import phase
from ..retry import backoff
from ..store.runs import RunRecords
from ..store.tables import utcnow
from .active import SHUTDOWN, ActiveRun, describe
from .attempt import Adopted, AttemptOutcome, Attempts, StepContext
from .cache import memo_key
from .execution import Execution
from .fanout.attempt import FanOutAttempts, FanOutPass
from .pools import Pools
from .spec import backend_of
from .step_attempts import StepAttempts
from .step_failure import StepFailed
from .strategies import Strategies

log = logging.getLogger(__name__)

SetStep = Callable[..., Awaitable[None]]  # (run, step name, status, **fields): the checked record write


class StepWork:
    """Runs one step of a run to its end and records it (``run``)."""

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
        self.step_attempts = StepAttempts(settings, attempts, records, strategies, self._tool)

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
                    # None is not written (``StepFacts``), here or when the run's close writes it.
                    known = {key: value for key, value in done.items() if value is not None}
                    await self.set_step(run, name, StepStatus.SUCCEEDED, ended_at=utcnow(), **known)
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
        with phase("step: pinned registrations"):
            output, source, tool = await self._registrations(run, step)
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
            else:  # running from its first attempt's record (``StepAttempts``: one write for both)
                outcome, used = await self.step_attempts.run(run, ctx, tool, scratch, adopted)
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

    async def _registrations(self, run: ActiveRun, step: Step) -> tuple[Dataset, Dataset | None, Tool]:
        """The step's output dataset, input dataset and tool, each read now and checked against the
        pins. Read at the step's start, not taken from the API's check: a registration changed since
        the run was asked for still fails the step (``RegistrationChanged``). The reads are
        independent: they wait for etcd together (one round trip's wait, not three); when several
        fail, the first in that order is the step's error, as when they were read one by one."""
        scope = run.pipeline.name
        reads: list[Awaitable[Dataset | Tool]] = [self.pins.dataset(scope, step.output_dataset)]
        if step.input_dataset:
            reads.append(self.pins.dataset(scope, step.input_dataset))
        reads.append(self._tool(run, step.tool))
        found = await asyncio.gather(*reads, return_exceptions=True)
        for result in found:
            if isinstance(result, BaseException):
                raise result
        output, *source, tool = found
        assert isinstance(output, Dataset) and isinstance(tool, Tool)
        input_dataset = source[0] if source else None
        assert input_dataset is None or isinstance(input_dataset, Dataset)
        return output, input_dataset, tool

    async def _tool(self, run: ActiveRun, name: str) -> Tool:
        # From etcd, or this instance's copy while etcd is unreachable (a run needs no quorum), and
        # only as the pipeline's pin says: never an image swapped in since.
        return await self.pins.tool(run.pipeline.name, name)

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
