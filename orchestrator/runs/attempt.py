"""One attempt of one step: input snapshot, one container, the commit on the node branch, the
ground-truth vote. The engine (``engine.py``) decides when and how often; this module does one try.

Seams for fan-out (``runs/fanout/``): ``snapshot_input``, ``prepare_output``, ``container_request``
and ``execute_container`` are separate so a fan-out step can run one container per shard (each with its
own attempt row, ``RunRecords.add_attempt(shard=...)``) and then ``commit_and_vote`` once.

Tool containers get ``MAO_INSTANCE``, ``MAO_RUN_ID``, ``MAO_PIPELINE``, ``MAO_STEP``, ``MAO_ATTEMPT``
(1-based) and ``MAO_TOOL`` (the registered name of the tool this attempt runs) in their environment,
set last, so a step's own env cannot override them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..datasets import DatasetRepo, Datasets
from ..datasets.repo import BranchConflict
from ..domain.pipeline import Dataset, Step, Tool
from ..domain.states import AttemptStatus, MergeState, StepStatus
from ..errors import Conflict, GitError, MaoError, NotFound, Unavailable
from ..executors import ContainerRequest, ContainerResult, ExecutorBackend
from ..gateway.insights import InsightsPublisher, insights_stamp, read_insights
from ..merging.voting import Voting
from ..store.retention import existing_runs
from ..store.runs import RunRecords
from .limits import step_limits
from .step_logs import StepLogs

log = logging.getLogger(__name__)

# Slack over the step's own timeout before the orchestrator stops waiting for a silent executor.
EXECUTOR_SLACK = 120.0


class StepFailed(Exception):
    """An attempt ended without success. ``passable``: the same attempt again may succeed (non-zero
    exit, timeout, stall, executor or git remote away); a conflict, a missing tool or dataset, or a
    request the executor refuses will not pass by retrying."""

    def __init__(
        self,
        message: str,
        *,
        status: StepStatus = StepStatus.FAILED,
        attempt_status: AttemptStatus = AttemptStatus.FAILED,
        passable: bool = False,
        exit_code: int | None = None,
        image_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.attempt_status = attempt_status
        self.passable = passable
        self.exit_code = exit_code
        self.image_id = image_id


def classify(exc: MaoError) -> StepFailed:
    """A library-level error met during an attempt, as the step failure it means."""
    passable = isinstance(exc, Unavailable | GitError | Conflict) and not isinstance(exc, NotFound)
    return StepFailed(exc.message, passable=passable)


@dataclass(frozen=True)
class StepContext:
    """What every attempt of a step shares."""

    run_id: str
    pipeline: str
    position: int
    step: Step
    output: Dataset
    source: Dataset | None  # the input dataset, if the step has one
    branch: str
    # Overlap ``allow``: when the node branch's folder is busy (another run of the pipeline), this
    # step takes a folder of its own instead of waiting (``Attempts.branch``).
    side_by_side: bool = False


@dataclass(frozen=True)
class AttemptOutcome:
    input_commit: str | None
    output_commit: str
    changed: bool
    merge_commit: str | None
    merge_state: MergeState
    image_id: str | None
    insights: str | None


class Attempts:
    def __init__(
        self,
        settings: Settings,
        datasets: Datasets,
        executor: ExecutorBackend,
        voting: Voting,
        insights: InsightsPublisher,
        records: RunRecords,
    ) -> None:
        self.settings = settings
        self.datasets = datasets
        self.executor = executor
        self.voting = voting
        self.insights = insights
        self.records = records
        self._branch_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Every attempt's full log (step_logs.py); GET /runs/{id}/log and retention use it too.
        self.step_logs = StepLogs(
            settings.data_dir, executor, lambda ids: existing_runs(records.store, ids)
        )

    async def run(
        self,
        ctx: StepContext,
        attempt: int,
        tool: Tool,
        scratch: Path,
        voting: Callable[[], object] | None = None,
    ) -> AttemptOutcome:
        """One full attempt; raises StepFailed. The caller records the attempt row's start and end.
        ``voting`` is called when the attempt starts pushing (its ground-truth vote): from there on,
        stopping the run lets it finish rather than leave half a vote."""
        try:
            input_dir, input_commit = await self.snapshot_input(ctx, scratch / f"{ctx.position}-{attempt}")
            if input_commit is not None:
                await self.records.update_step(ctx.run_id, ctx.step.name, input_commit=input_commit)
            async with self.branch(ctx) as lane:
                workdir, parent = await self.prepare_output(ctx, lane)
                # What insights.json was before the tool: one that only came with the branch is not its.
                before = await asyncio.to_thread(insights_stamp, workdir)
                request = self.container_request(ctx, attempt, tool, workdir, input_dir)
                try:
                    result = await self.execute_container(ctx, request)
                    await self.reclaim_output(ctx, lane)
                    await self.records.update_step(
                        ctx.run_id,
                        ctx.step.name,
                        image=tool.image,
                        exit_code=result.exit_code,
                        image_id=result.image_id,
                        log_tail=redact(result.log_tail, ctx.step.private_env),
                    )
                    check_result(ctx.step, result, self.settings.step_timeout)
                    trailers = self.trailers(ctx, tool, result.image_id, input_commit)
                    commit, changed = await self.commit(ctx, parent, trailers, lane)
                    await self.records.update_step(
                        ctx.run_id, ctx.step.name, output_commit=commit, changed=changed
                    )
                    # Read now, while the folder holds exactly what was committed.
                    insights = await asyncio.to_thread(read_insights, workdir, before)
                except BaseException:
                    # Back from the tool whatever happened (failed, refused, cancelled, a commit the
                    # disk had no room for): nothing of this attempt stays in the folder.
                    await asyncio.shield(self.reset_output(ctx, lane))
                    raise
            if voting is not None:
                voting()
            merge_commit, state = await self.vote(ctx, commit, trailers)
            published = None
            if insights is not None:
                published = await self.insights.publish(
                    insights,
                    tool=tool.name,
                    pipeline=ctx.pipeline,
                    run=ctx.run_id,
                    step=ctx.step.name,
                    commit=commit,
                )
            return AttemptOutcome(
                input_commit, commit, changed, merge_commit, state, result.image_id, published
            )
        except MaoError as exc:
            raise classify(exc) from exc

    # -- the parts (fan-out calls these per shard) ---------------------------------------------------
    async def snapshot_input(self, ctx: StepContext, folder: Path) -> tuple[Path | None, str | None]:
        """Export the input dataset's ground-truth as it is now (after the step's needs merged)."""
        if ctx.source is None:
            return None, None
        folder.mkdir(parents=True)

        def take(repo: DatasetRepo) -> str:
            repo.sync()
            return str(repo.snapshot(folder))

        return folder, await self.datasets.run(ctx.source.name, ctx.source.master, take)

    async def prepare_output(self, ctx: StepContext, lane: str | None = None) -> tuple[Path, str]:
        """The node branch's work folder (or the run's own, ``lane``), reset to the branch;
        (folder, parent commit)."""

        def prepare(repo: DatasetRepo) -> tuple[Path, str]:
            repo.sync()
            return repo.prepare_worktree(ctx.branch, lane)

        return await self.datasets.run(ctx.output.name, ctx.output.master, prepare)

    async def reset_output(self, ctx: StepContext, lane: str | None = None) -> None:
        """After a failed attempt: the work folder holds the node branch again (its own lane is
        removed by ``branch`` instead). Never raises: a folder that cannot be reset is emptied, and
        what could not be done is logged."""
        if lane is not None:
            return
        try:
            done = await self.datasets.run(
                ctx.output.name, ctx.output.master, lambda repo: repo.reset_worktree(ctx.branch)
            )
            log.debug("run %s: step %s: %s", ctx.run_id, ctx.step.name, done)
        except Exception as exc:  # noqa: BLE001 - a clean-up never hides the failure it cleans up after
            log.warning("run %s: the work folder of step %s was not reset: %s", ctx.run_id, ctx.step.name, exc)

    async def reclaim_output(self, ctx: StepContext, lane: str | None = None) -> None:
        """Take the work folder back from the tool as soon as its container ended, whatever the
        outcome: nothing it left may act on the host (datasets/hygiene.py, docs/security.md#tools)."""
        await self.datasets.run(
            ctx.output.name, ctx.output.master, lambda repo: repo.reclaim_worktree(ctx.branch, lane)
        )

    def container_request(
        self,
        ctx: StepContext,
        attempt: int,
        tool: Tool,
        workdir: Path,
        input_dir: Path | None,
        extra_env: Mapping[str, str] | None = None,
        name_suffix: str = "",
    ) -> ContainerRequest:
        return container_request(
            self.settings,
            run_id=ctx.run_id,
            pipeline=ctx.pipeline,
            position=ctx.position,
            step=ctx.step,
            attempt=attempt,
            tool=tool,
            workdir=workdir,
            input_dir=input_dir,
            extra_env=extra_env,
            name_suffix=name_suffix,
        )

    async def execute_container(self, ctx: StepContext, request: ContainerRequest) -> ContainerResult:
        """Run the container to its end, then keep its full log in the background (``GET
        /runs/{id}/log`` waits for a keep under way); raises MaoError when the executor cannot."""
        assert request.name is not None, "container_request names every container"
        try:
            return await self.executor.run(request, timeout=request.timeout + EXECUTOR_SLACK)
        finally:
            self.step_logs.keep_later(ctx.run_id, request.name, ctx.step.private_env)

    def trailers(
        self, ctx: StepContext, tool: Tool, image_id: str | None, input_commit: str | None
    ) -> dict[str, str]:
        return {
            "MAO-Run": ctx.run_id,
            "MAO-Pipeline": ctx.pipeline,
            "MAO-Step": ctx.step.name,
            "MAO-Instance": self.settings.instance_name,
            "MAO-Tool": f"{tool.name} ({tool.image})",
            "MAO-Tool-Image": image_id or "unknown",
            "MAO-Input-Commit": input_commit or "none",
        }

    async def commit(
        self, ctx: StepContext, parent: str, trailers: Mapping[str, str], lane: str | None = None
    ) -> tuple[str, bool]:
        """Commit the work folder on the node branch (local only: the vote pushes). Output that
        conflicts with a run side by side on the same branch fails the step ``conflict``."""
        message = f"{ctx.pipeline}/{ctx.step.name}: output of run {ctx.run_id}"
        try:
            return await self.datasets.run(
                ctx.output.name,
                ctx.output.master,
                lambda repo: repo.commit_worktree(ctx.branch, parent, message, trailers, lane),
            )
        except BranchConflict as exc:
            await self.records.update_step(
                ctx.run_id,
                ctx.step.name,
                output_commit=exc.commit,
                conflicts=exc.paths,
                merge_state=MergeState.CONFLICT,
            )
            raise StepFailed(exc.message, status=StepStatus.CONFLICT) from exc

    async def vote(
        self, ctx: StepContext, commit: str, trailers: Mapping[str, str]
    ) -> tuple[str | None, MergeState]:
        """Merge into ground-truth (or queue the merge); a conflict raises StepFailed (not passable)."""
        message = f"Merge {ctx.branch} into ground-truth (run {ctx.run_id}, step {ctx.step.name})"
        try:
            vote = await self.voting.vote(
                (ctx.run_id, ctx.step.name), ctx.output, ctx.branch, commit, message, trailers
            )
        except BranchConflict as exc:  # another run's vote on this branch landed after our commit
            await self.records.update_step(
                ctx.run_id,
                ctx.step.name,
                conflicts=exc.paths,
                merge_state=MergeState.CONFLICT,
            )
            raise StepFailed(exc.message, status=StepStatus.CONFLICT) from exc
        if vote.conflicts:
            await self.records.update_step(
                ctx.run_id,
                ctx.step.name,
                conflicts=vote.conflicts,
                merge_state=MergeState.CONFLICT,
            )
            raise StepFailed(
                f"step {ctx.step.name}: {ctx.branch} conflicts with ground-truth of {ctx.output.name} in "
                + ", ".join(vote.conflicts[:10]),
                status=StepStatus.CONFLICT,
            )
        return vote.commit, vote.state

    @contextlib.asynccontextmanager
    async def branch(self, ctx: StepContext) -> AsyncIterator[str | None]:
        """The node branch's work folder, held (None); or, for a run side by side that finds it busy,
        a folder of the run's own (its lane: the run id), removed afterwards. Two pipelines with a
        step of the same name share a node branch and its work folder (they wait for each other)."""
        lock = self._branch_locks.setdefault((ctx.output.name, ctx.branch), asyncio.Lock())
        if ctx.side_by_side and lock.locked():
            lane = ctx.run_id
            try:
                yield lane
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self.datasets.run(
                            ctx.output.name,
                            ctx.output.master,
                            lambda repo: repo.drop_lane(ctx.branch, lane),
                        )
                    )
            return
        async with lock:
            yield None


def container_request(
    settings: Settings,
    *,
    run_id: str,
    pipeline: str,
    position: int,
    step: Step,
    attempt: int,
    tool: Tool,
    workdir: Path,
    input_dir: Path | None,
    extra_env: Mapping[str, str] | None = None,
    name_suffix: str = "",
) -> ContainerRequest:
    """The one /run request of an attempt (the engine's, fan-out's, and init's check in
    ``pipelines/stepcheck.py``): the tool runs as ``settings.tool_user()``, within the step's limits."""
    identity = {
        "MAO_INSTANCE": settings.instance_name,
        "MAO_RUN_ID": run_id,
        "MAO_PIPELINE": pipeline,
        "MAO_STEP": step.name,
        "MAO_ATTEMPT": str(attempt),
        "MAO_TOOL": tool.name,
        **(extra_env or {}),
    }
    env = {**(step.env or {}), **(step.private_env or {}), **identity}
    limits = step_limits(step, settings)
    return ContainerRequest(
        name=container_name(settings.instance_name, run_id, position, attempt) + name_suffix,
        image=tool.image,
        cmd=step.cmd,
        env=env,
        output_dir=str(settings.host_path(workdir)),
        input_dir=str(settings.host_path(input_dir)) if input_dir else None,
        user="{}:{}".format(*settings.tool_user()),
        docker_socket=step.docker_socket,
        timeout=float(step.timeout or settings.step_timeout),
        stall_timeout=float(step.stall_timeout) if step.stall_timeout else None,
        labels={"mao.run": run_id, "mao.step": step.name, "mao.attempt": str(attempt)},
        memory=limits.memory,
        cpus=limits.cpus,
        pids=limits.pids,
        log_max_bytes=settings.step_log_max_bytes,
        writable_root=step.writable_root,
        tmp_size=settings.step_tmp_size,
    )


def container_name(instance: str, run_id: str, position: int, attempt: int) -> str:
    return f"mao-{instance}-{run_id[:12]}-{position}-{attempt}"


def check_result(step: Step, result: ContainerResult, default_timeout: float) -> None:
    """StepFailed unless the container exited 0; timeouts and stalls can pass."""
    image_id = result.image_id
    if result.cancelled:
        raise StepFailed(
            f"step {step.name} was cancelled", attempt_status=AttemptStatus.CANCELLED, image_id=image_id
        )
    if result.timed_out:
        raise StepFailed(
            f"step {step.name} timed out after {step.timeout or default_timeout:g} s",
            attempt_status=AttemptStatus.TIMED_OUT,
            passable=True,
            image_id=image_id,
        )
    if result.stalled:
        raise StepFailed(
            f"step {step.name} stalled: no output for {step.stall_timeout or 0:g} s",
            attempt_status=AttemptStatus.STALLED,
            passable=True,
            image_id=image_id,
        )
    if result.exit_code != 0:
        raise StepFailed(
            f"step {step.name} exited with code {result.exit_code}",
            passable=True,
            exit_code=result.exit_code,
            image_id=image_id,
        )


def redact(text: str, secrets: dict[str, str] | None) -> str:
    """A tool that prints its secret must not publish it through the run record."""
    for value in sorted((secrets or {}).values(), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text
