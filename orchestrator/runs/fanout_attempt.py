"""A fan-out step in the engine: one container per shard, then one commit and one ground-truth vote.

Where a plain step is a series of whole attempts (``engine.Runner._attempts``), a fan-out step is one
pass in which each shard has its own attempts (``fanout.Coordinator``): the input snapshot is taken
once, the node branch's work folder is prepared once, every shard container gets its own input folder
(``/usr/src/app/input``), an empty output folder (``/usr/src/app/data``), ``MAO_SHARD`` (1-based),
``MAO_SHARD_COUNT`` and ``MAO_ATTEMPT`` (the shard's own attempt number), and is recorded as an attempt
with its ``shard``. When every shard has succeeded, their outputs are combined into the work folder
(``shards.combine``), committed once and voted once, through the same ``Attempts`` parts as a plain
step. The step's ``shards`` record (count, succeeded, failed, speculative) follows as shards end.

A shard that fails for good fails the step; its siblings are cancelled (their containers killed) and
nothing is committed or pushed. The step is then not retried as a whole: its shards were.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..errors import MaoError
from ..gateway.insights import read_insights
from ..models import Tool
from ..retry import backoff
from ..store.runs import RunRecords
from .attempt import (
    AttemptOutcome,
    Attempts,
    StepContext,
    StepFailed,
    check_result,
    classify,
    container_name,
    redact,
)
from .fanout import FanOutSummary, ShardOutcome, ShardRun, SpeculationPolicy
from .fanout_step import run_fan_out
from .states import AttemptStatus


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

    async def run(
        self,
        ctx: StepContext,
        tool: Tool,
        fallback: Tool | None,
        scratch: Path,
        voting: Callable[[], object],
        stop_reason: Callable[[], str | None],
    ) -> AttemptOutcome:
        """The whole step; raises StepFailed (never passable: shards were retried on their own).
        ``voting`` is called when the vote starts (from there on, stopping lets it finish);
        ``stop_reason`` says why the run is stopping, for the records of cancelled shards."""
        step = ctx.step
        fan_out = step.fan_out
        assert fan_out is not None, "a fan-out step has fan_out"
        try:
            input_dir, input_commit = await self.attempts.snapshot_input(
                ctx, scratch / f"{ctx.position}-input"
            )
            if input_dir is None:  # refused at init; a step edited in the database is still no crash
                raise StepFailed(f"step {step.name}: fan_out needs an input dataset")
            await self.records.update_step(
                ctx.run_id,
                step.name,
                input_commit=input_commit,
                image=tool.image,
                shards=FanOutSummary(0, 0, 0, 0).as_dict(),
            )
            logs: dict[str, tuple[str, int | None]] = {}  # "ok"/"failed" -> (log tail, exit code)
            image_ids: list[str] = []

            async def run_container(run: ShardRun, shard_input: Path, shard_output: Path) -> ShardOutcome:
                return await self._shard(
                    ctx, tool, fallback, run, shard_input, shard_output, logs, image_ids, stop_reason
                )

            async def progress(summary: FanOutSummary) -> None:
                await self.records.update_step(ctx.run_id, step.name, shards=summary.as_dict())

            async with self.attempts.branch(ctx):
                workdir, parent = await self.attempts.prepare_output(ctx)
                result = await run_fan_out(
                    fan_out,
                    snapshot=input_dir,
                    scratch=scratch / f"{ctx.position}-shards",
                    workdir=workdir,
                    run_container=run_container,
                    retries=step.retries,
                    delay=lambda _shard, failures: backoff(failures, step.retry_delay),
                    speculation=self.speculation,
                    progress=progress,
                    fallback=fallback is not None,
                )
                log_tail, exit_code = logs.get("failed" if not result.ok else "ok", ("", None))
                await self.records.update_step(
                    ctx.run_id,
                    step.name,
                    shards=result.summary.as_dict(),
                    exit_code=exit_code if not result.ok else (0 if image_ids else None),
                    image_id=image_ids[0] if image_ids else None,
                    log_tail=redact(log_tail, step.private_env),
                )
                if not result.ok:
                    raise StepFailed(f"step {step.name}: {result.error}")
                image_id = image_ids[0] if image_ids else None
                trailers = self.attempts.trailers(ctx, tool, image_id, input_commit)
                trailers["MAO-Shards"] = str(result.summary.count)
                commit, changed = await self.attempts.commit(ctx, parent, trailers)
                await self.records.update_step(ctx.run_id, step.name, output_commit=commit, changed=changed)
                insights = await asyncio.to_thread(read_insights, workdir)
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
        except MaoError as exc:
            raise classify(exc) from exc

    async def _shard(
        self,
        ctx: StepContext,
        tool: Tool,
        fallback: Tool | None,
        run: ShardRun,
        shard_input: Path,
        shard_output: Path,
        logs: dict[str, tuple[str, int | None]],
        image_ids: list[str],
        stop_reason: Callable[[], str | None],
    ) -> ShardOutcome:
        """One container for one shard, recorded as an attempt with its shard."""
        shard = run.shard
        use = fallback if run.fallback and fallback is not None else tool
        suffix = f"-s{shard.index}"
        container = (
            container_name(self.settings.instance_name, ctx.run_id, ctx.position, run.attempt) + suffix
        )
        attempt_id = await self.records.add_attempt(
            ctx.run_id,
            ctx.step.name,
            run.attempt,
            use.name,
            container,
            shard=shard.index,
            speculative=run.speculative,
        )
        request = self.attempts.container_request(
            ctx,
            run.attempt,
            use,
            shard_output,
            shard_input,
            extra_env={"MAO_SHARD": str(shard.index), "MAO_SHARD_COUNT": str(shard.count)},
            name_suffix=suffix,
        )
        label = f"shard {shard.index}/{shard.count} attempt {run.attempt}"
        result = None
        try:
            result = await self.attempts.execute_container(ctx, request)
            check_result(ctx.step, result, self.settings.step_timeout)
        except StepFailed as failure:
            if result is not None:
                logs["failed"] = (f"[{label}]\n{result.log_tail}", result.exit_code)
            await self.records.end_attempt(
                attempt_id,
                failure.attempt_status,
                exit_code=failure.exit_code,
                image_id=failure.image_id,
                error=failure.message,
            )
            return ShardOutcome(ok=False, error=failure.message, retryable=failure.passable)
        except MaoError as exc:  # the executor away, or refusing the request
            problem = classify(exc)
            await self.records.end_attempt(attempt_id, AttemptStatus.FAILED, error=problem.message)
            return ShardOutcome(ok=False, error=problem.message, retryable=problem.passable)
        except asyncio.CancelledError as cancel:
            # Cancelling the request makes the executor kill and remove the container.
            reason = stop_reason() or (str(cancel.args[0]) if cancel.args else "cancelled")
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.records.end_attempt(attempt_id, AttemptStatus.CANCELLED, error=reason)
                )
            raise
        logs["ok"] = (f"[{label}]\n{result.log_tail}", 0)
        if result.image_id:
            image_ids.append(result.image_id)
        await self.records.end_attempt(
            attempt_id, AttemptStatus.SUCCEEDED, exit_code=0, image_id=result.image_id
        )
        return ShardOutcome(ok=True)
