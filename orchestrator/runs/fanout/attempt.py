"""A fan-out step in the engine: one container per shard, then one commit and one ground-truth vote.

Where a plain step is a series of whole attempts (``step_attempts.StepAttempts``), a fan-out step is one
pass in which each shard has its own attempts (``coordinator.Coordinator``): the input snapshot is taken
once, the node branch's work folder is prepared once, every shard container gets its own input folder
(``/usr/src/app/input``), an empty output folder (``/usr/src/app/data``), ``MAO_SHARD`` (1-based),
``MAO_SHARD_COUNT`` and ``MAO_ATTEMPT`` (the shard's own attempt number), and is recorded as an attempt
with its ``shard``. When every shard has succeeded, their outputs are combined into the work folder
(``files.combine``), committed once and voted once, through the same ``Attempts`` parts as a plain
step. The step's ``shards`` record (count, succeeded, failed, speculative) follows as shards end.

A shard that fails for good fails the step; its siblings are cancelled (their containers killed) and
nothing is committed or pushed. The step is then not retried as a whole: its shards were.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import Settings
from ...datasets.hygiene import give_to_tool, take_back
from ...datasets.trees import TreeLimits
from ...domain.pipeline import Tool
from ...domain.states import AttemptStatus
from ...errors import MaoError
from ...executors.seam import BackendRejected, End
from ...gateway.insights import insights_stamp, read_insights
from ...retry import backoff
from ...store.run_changes import AttemptEnded, NewAttempt, StepFacts
from ...store.runs import RunRecords
from ..attempt import AttemptOutcome, Attempts, StepContext, redact
from ..execution import where_it_ran
from ..spec import backend_of
from ..step_failure import StepFailed, check_end, classify
from .coordinator import FanOutSummary, ShardOutcome, ShardRun, SpeculationPolicy
from .step import run_fan_out


@dataclass
class FanOutPass:
    """One pass of a fan-out step: ``number`` (1-based) names its scratch folders; its shard attempts
    are numbered after ``attempt_offset`` (the attempts of earlier passes), and ``attempts_used``
    ends as the highest shard attempt number this pass reached."""

    number: int = 1
    attempt_offset: int = 0
    attempts_used: int = 0

    def next(self) -> FanOutPass:
        return FanOutPass(self.number + 1, self.attempts_used)


class FanOutAttempts:
    """Runs fan-out steps with the parts of ``Attempts``; records shard attempts in ``records``."""

    def __init__(
        self,
        settings: Settings,
        attempts: Attempts,
        records: RunRecords,
        speculation: SpeculationPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.attempts = attempts
        self.records = records
        self.speculation = speculation or SpeculationPolicy()
        # The walks of shard folders (snapshot listing, each output): datasets/trees.py.
        self.limits = TreeLimits(settings.step_max_files)

    async def run(
        self,
        ctx: StepContext,
        tool: Tool,
        fallback: Tool | None,
        scratch: Path,
        voting: Callable[[], object],
        stop_reason: Callable[[], str | None],
        this_pass: FanOutPass | None = None,
    ) -> AttemptOutcome:
        """One pass of the whole step; raises StepFailed. A shard failing for good is never passable
        (its attempts were spent); a failure outside the shards (snapshot, commit, vote: a git remote
        or the database away) may be, and the engine may then run another pass (``this_pass.next()``).
        ``voting`` is called when the vote starts (from there on, stopping lets it finish);
        ``stop_reason`` says why the run is stopping, for the records of cancelled shards."""
        step = ctx.step
        fan_out = step.fan_out
        assert fan_out is not None, "a fan-out step has fan_out"
        this_pass = this_pass or FanOutPass()
        shards = _Shards(self, ctx, tool, fallback, stop_reason, this_pass)
        folder = scratch / f"{ctx.position}-fan-{this_pass.number}"
        try:
            input_dir, input_commit = await self.attempts.snapshot_input(ctx, folder / "input")
            if input_dir is None:  # refused at init; a step edited in the database is still no crash
                raise StepFailed(f"step {step.name}: fan_out needs an input dataset")
            await self.records.note_step(
                ctx.run_id,
                step.name,
                StepFacts(
                    input_commit=input_commit, image=tool.image, shards=FanOutSummary(0, 0, 0, 0).as_dict()
                ),
            )

            async def progress(summary: FanOutSummary) -> None:
                await shards.serialised(
                    self.records.note_step(ctx.run_id, step.name, StepFacts(shards=summary.as_dict()))
                )

            async with self.attempts.branch(ctx) as lane:
                workdir, parent = await self.attempts.prepare_output(ctx, lane)
                # What insights.json was before the shards: one that only came with the branch is not theirs.
                before = await asyncio.to_thread(insights_stamp, workdir)
                try:
                    result = await run_fan_out(
                        fan_out,
                        snapshot=input_dir,
                        scratch=folder / "shards",
                        workdir=workdir,
                        run_container=shards.run_container,
                        retries=step.retries,
                        delay=lambda _shard, failures: backoff(failures, step.retry_delay),
                        speculation=self.speculation,
                        progress=progress,
                        fallback=fallback is not None,
                        limits=self.limits,
                    )
                    await shards.flush()
                    log_tail, exit_code = shards.logs.get("ok" if result.ok else "failed", ("", None))
                    image_id = shards.image_ids[0] if shards.image_ids else None
                    await self.records.note_step(
                        ctx.run_id,
                        step.name,
                        StepFacts(
                            shards=result.summary.as_dict(),
                            exit_code=exit_code,
                            image_id=image_id,
                            log_tail=redact(log_tail, step.private_env),
                        ),
                    )
                    if not result.ok:
                        raise StepFailed(f"step {step.name}: {result.error}")
                    trailers = self.attempts.trailers(ctx, tool, image_id, input_commit)
                    trailers["MAO-Shards"] = str(result.summary.count)
                    commit, changed = await self.attempts.commit(ctx, parent, trailers, lane)
                    await self.records.note_step(
                        ctx.run_id, step.name, StepFacts(output_commit=commit, changed=changed)
                    )
                    # Read now, while the folder holds exactly what was committed.
                    insights = await asyncio.to_thread(read_insights, workdir, before)
                except BaseException:
                    # Combined outputs, a commit that failed: nothing of this pass stays in the folder.
                    await asyncio.shield(self.attempts.reset_output(ctx, lane))
                    raise
            voting()
            merge_commit, state = await self.attempts.vote(ctx, commit, trailers)
            published = None
            if insights is not None:
                published = await self.attempts.insights.publish(
                    insights,
                    tool=tool.name,
                    pipeline=ctx.pipeline,
                    run=ctx.run_id,
                    step=step.name,
                    commit=commit,
                )
            return AttemptOutcome(input_commit, commit, changed, merge_commit, state, image_id, published)
        except (MaoError, BackendRejected) as exc:
            raise classify(exc) from exc
        finally:
            # Cancelled or failed: the attempt records still get their end.
            with contextlib.suppress(Exception):
                await asyncio.shield(shards.flush())


class _Shards:
    """The containers of one fan-out step: runs each shard attempt and records it.

    Attempt rows are written beside the containers rather than before and after them, so a shard's
    slot waits for Docker only, not for the database; ``flush`` waits for every write (and raises
    the first that failed) before the step commits."""

    def __init__(
        self,
        owner: FanOutAttempts,
        ctx: StepContext,
        tool: Tool,
        fallback: Tool | None,
        stop_reason: Callable[[], str | None],
        this_pass: FanOutPass,
    ) -> None:
        self.owner = owner
        self.this_pass = this_pass
        self.ctx = ctx
        self.tool = tool
        self.fallback = fallback
        self.stop_reason = stop_reason
        self.logs: dict[str, tuple[str, int | None]] = {}  # "ok"/"failed" -> (log tail, exit code)
        self.image_ids: list[str] = []
        self._writes: set[asyncio.Task[object]] = set()
        self._lock = asyncio.Lock()  # FIFO: an attempt's start is written before its end

    async def flush(self) -> None:
        while self._writes:
            pending = list(self._writes)
            results = await asyncio.gather(*pending, return_exceptions=True)
            self._writes.difference_update(pending)
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def serialised(self, coroutine: Coroutine[Any, Any, object]) -> object:
        """One record write at a time: concurrent SQLite transactions would wait on each other's
        lock (busy_timeout sleeps), which costs far more than writing one after the other."""
        async with self._lock:
            return await coroutine

    def _write(self, coroutine: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        task = asyncio.ensure_future(self.serialised(coroutine))
        self._writes.add(task)
        return task

    def _end(self, adding: asyncio.Task[object], status: AttemptStatus, **fields: Any) -> None:
        async def end() -> None:
            attempt_id = await adding
            assert isinstance(attempt_id, int)
            await self.owner.records.end_attempt(AttemptEnded(attempt_id, status, **fields))

        self._write(end())

    async def run_container(self, run: ShardRun, shard_input: Path, shard_output: Path) -> ShardOutcome:
        """One container for one shard, recorded as an attempt with its shard."""
        ctx, shard = self.ctx, run.shard
        attempt = self.this_pass.attempt_offset + run.attempt
        self.this_pass.attempts_used = max(self.this_pass.attempts_used, attempt)
        use = self.fallback if run.fallback and self.fallback is not None else self.tool
        spec = self.owner.attempts.spec(
            ctx,
            attempt,
            use,
            shard_output,
            shard_input,
            shard=shard.index,
            extra_env={"MAO_SHARD": str(shard.index), "MAO_SHARD_COUNT": str(shard.count)},
        )
        adding = self._write(
            self.owner.records.start_attempt(
                NewAttempt(
                    ctx.run_id,
                    ctx.step.name,
                    attempt,
                    use.name,
                    spec.name,
                    shard=shard.index,
                    speculative=run.speculative,
                    backend=backend_of(ctx.step, self.owner.settings),
                )
            )
        )
        label = f"shard {shard.index}/{shard.count} attempt {attempt}"
        end: End | None = None
        owner = self.owner.attempts.datasets.tool_owner
        try:
            # The tool's uid gets the shard's folders, and the output comes back whatever happens.
            await asyncio.to_thread(give_to_tool, shard_input, owner)
            await asyncio.to_thread(give_to_tool, shard_output, owner)
            try:
                end = (await self.owner.attempts.execute(ctx, spec)).end
            finally:
                limits = self.owner.limits
                await asyncio.shield(asyncio.to_thread(take_back, shard_output, owner, limits))
            check_end(ctx.step, end, spec)
        except StepFailed as failure:
            if end is not None:
                self.logs["failed"] = (f"[{label}]\n{end.log_tail}", end.exit_code)
            self._end(
                adding,
                failure.attempt_status,
                exit_code=failure.exit_code,
                image_id=failure.image_id,
                error=failure.message,
                **where_it_ran(failure.end),
            )
            return ShardOutcome(ok=False, error=failure.message, retryable=failure.passable)
        except (MaoError, BackendRejected) as exc:  # the backend away, or refusing the request
            problem = classify(exc)
            self._end(adding, AttemptStatus.FAILED, error=problem.message)
            return ShardOutcome(ok=False, error=problem.message, retryable=problem.passable)
        except asyncio.CancelledError as cancel:
            # The attempt's object is removed before the cancellation goes on (runs/execution.py).
            reason = self.stop_reason() or (str(cancel.args[0]) if cancel.args else "cancelled")
            self._end(adding, AttemptStatus.CANCELLED, error=reason)
            raise
        self.logs["ok"] = (f"[{label}]\n{end.log_tail}", 0)
        if end.image_id:
            self.image_ids.append(end.image_id)
        self._end(adding, AttemptStatus.SUCCEEDED, exit_code=0, image_id=end.image_id, **where_it_ran(end))
        return ShardOutcome(ok=True)
