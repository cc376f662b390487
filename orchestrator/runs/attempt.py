"""One attempt of one step: input snapshot, one container on the step's backend, the commit on the
node branch, the ground-truth vote. The engine (``engine.py``) decides when and how often; this
module does one try.

Seams for fan-out (``runs/fanout/``): ``snapshot_input``, ``prepare_output``, ``spec`` and
``execute`` are separate so a fan-out step can run one container per shard (each with its own
attempt row, ``RunRecords.start_attempt``) and then ``commit_and_vote`` once. An attempt a
previous process started (``Adopted``, ``reconcile.py``) skips the snapshot, the folder's reset and
the submission: it waits for the object that is already there and goes on from its end.

What the tool sees (its environment, user, limits, folders) is built in one place: ``spec.py``.
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
from ..datasets.branches import BranchConflict
from ..datasets.trees import remove_tree
from ..domain.pipeline import Dataset, Step, Tool
from ..domain.states import MergeState, StepStatus
from ..errors import MaoError
from ..executors.seam import BackendRejected, ContainerSpec, End, Handle
from ..gateway.insights import InsightsPublisher, insights_stamp, read_insights
from ..merging.voting import Voting
from ..phases import phase
from ..store.run_changes import StepFacts, ToolEnded
from ..store.runs import RunRecords
from .execution import Execution, Outcome
from .spec import backend_of, container_spec
from .step_failure import StepFailed, check_end, classify

log = logging.getLogger(__name__)


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
    insights: str | None  # what the step record says of its insights.json (published, ignored: why)
    end: End | None = None  # a plain step's object's end (a fan-out step's are per shard)
    # insights.json as the tool wrote it (parsed; None when it wrote none or it was ignored): what a
    # step's ``degraded_when: {insight, below}`` reads.
    insight_values: object = None


@dataclass(frozen=True)
class Adopted:
    """An attempt a previous process submitted, whose object is still on its backend (``reconcile.py``):
    the attempt goes on from waiting for it."""

    attempt_id: int
    number: int
    tool: str
    handle: Handle
    input_dir: Path | None
    input_commit: str | None
    lane: str | None  # the run's own folder of the node branch (overlap ``allow``), if it had one


class Attempts:
    def __init__(
        self,
        settings: Settings,
        datasets: Datasets,
        execution: Execution,
        voting: Voting,
        insights: InsightsPublisher,
        records: RunRecords,
    ) -> None:
        self.settings = settings
        self.datasets = datasets
        self.execution = execution
        self.voting = voting
        self.insights = insights
        self.records = records
        self._branch_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Every attempt's full log (step_logs.py); GET /runs/{id}/log and retention use it too.
        self.step_logs = execution.step_logs

    async def run(
        self,
        ctx: StepContext,
        attempt: int,
        tool: Tool,
        scratch: Path,
        voting: Callable[[], object] | None = None,
        adopted: Adopted | None = None,
        finishing: Callable[[], object] | None = None,
        snapshot: tuple[Path | None, str | None] = (None, None),
    ) -> AttemptOutcome:
        """One full attempt from its input ``snapshot`` (``snapshot_input``, which the caller takes
        before it records the attempt's start, so that the start is one write with the input commit
        in it); raises StepFailed. The caller records the attempt row's start and end.
        ``voting`` is called when the attempt starts pushing (its ground-truth vote): from there on,
        stopping the run lets it finish rather than leave half a vote. ``finishing`` is called once
        its tool has ended: a shutdown lets it commit and vote rather than leave it for the next
        process, which could not take it up (its object is gone)."""
        try:
            if adopted is None:
                input_dir, input_commit = snapshot
            else:
                input_dir, input_commit = adopted.input_dir, adopted.input_commit
            async with self.branch(ctx, adopted) as lane:
                before = None
                if adopted is None:
                    with phase("step: work folder (fetch, reset, hand-over)"):
                        workdir, parent = await self.prepare_output(ctx, lane)
                    # What insights.json was before the tool: one that only came with the branch is not its.
                    with phase("step: insights stamp"):
                        before = await asyncio.to_thread(insights_stamp, workdir)
                else:
                    workdir, parent = await self.current_output(ctx, lane)
                spec = self.spec(ctx, attempt, tool, workdir, input_dir, input_commit)
                tool_ended = False
                try:
                    with phase("container (executor)"):
                        outcome = await self.execute(ctx, spec, adopted.handle if adopted else None)
                    tool_ended = True
                    end = outcome.end
                    if finishing is not None:
                        finishing()
                    with phase("step: reclaim the work folder (hygiene)"):
                        await self.reclaim_output(ctx, lane)
                    with phase("db: step's container fields"):
                        await self.records.note_step(
                            ctx.run_id,
                            ctx.step.name,
                            ToolEnded(tool.image, end.exit_code, end.image_id, redact(end.log_tail, ctx.step.private_env)),
                        )
                    check_end(ctx.step, end, spec)
                    trailers = self.trailers(ctx, tool, end.image_id, input_commit)
                    with phase("step: commit (hygiene, add, write-tree, commit-tree)"):
                        commit, changed = await self.commit(ctx, parent, trailers, lane)
                    with phase("db: step output commit"):
                        await self.records.note_step(
                            ctx.run_id, ctx.step.name, StepFacts(output_commit=commit, changed=changed)
                        )
                    # Read now, while the folder holds exactly what was committed.
                    with phase("step: insights read"):
                        insights = await asyncio.to_thread(read_insights, workdir, before)
                except BaseException:
                    # Back from the tool whatever happened (failed, refused, cancelled, a commit the
                    # disk had no room for): nothing of this attempt stays in the folder; unless this
                    # process leaves the tool running for the next one to adopt.
                    if tool_ended or not self.execution.detaching:
                        await asyncio.shield(self.reset_output(ctx, lane))
                    raise
            if voting is not None:
                voting()
            with phase("vote (lock, merge, push, announce)"):
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
                input_commit, commit, changed, merge_commit, state, end.image_id, published, end,
                insights.value if insights is not None and insights.ignored is None else None,
            )  # fmt: skip
        except (MaoError, BackendRejected) as exc:
            raise classify(exc) from exc

    # -- the parts (fan-out calls these per shard) ---------------------------------------------------
    async def snapshot_input(self, ctx: StepContext, folder: Path) -> tuple[Path | None, str | None]:
        """Export the input dataset's ground-truth as it is now (after the step's needs merged)."""
        if ctx.source is None:
            return None, None
        if folder.exists():  # left by a process killed before it recorded this attempt's start
            await asyncio.to_thread(remove_tree, folder)
        folder.mkdir(parents=True)

        def take(repo: DatasetRepo) -> str:
            repo.sync()
            return str(repo.snapshot(folder))

        return folder, await self.datasets.run(ctx.source.name, ctx.source.master, take)

    async def prepare_output(self, ctx: StepContext, lane: str | None = None) -> tuple[Path, str]:
        """The node branch's work folder (or the run's own, ``lane``), reset to the branch;
        (folder, parent commit)."""

        def prepare(repo: DatasetRepo) -> tuple[Path, str]:
            repo.sync_for(ctx.branch)
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

    async def current_output(self, ctx: StepContext, lane: str | None = None) -> tuple[Path, str]:
        """An adopted attempt's work folder as its tool left it, and the commit it was reset to."""
        return await self.datasets.run(
            ctx.output.name, ctx.output.master, lambda repo: repo.worktree(ctx.branch, lane)
        )

    async def reclaim_output(self, ctx: StepContext, lane: str | None = None) -> None:
        """Take the work folder back from the tool as soon as its container ended, whatever the
        outcome: nothing it left may act on the host (datasets/hygiene.py, docs/security.md#tools)."""
        await self.datasets.run(
            ctx.output.name, ctx.output.master, lambda repo: repo.reclaim_worktree(ctx.branch, lane)
        )

    def spec(
        self,
        ctx: StepContext,
        attempt: int,
        tool: Tool,
        workdir: Path,
        input_dir: Path | None,
        input_commit: str | None = None,
        shard: int | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> ContainerSpec:
        return container_spec(
            self.settings,
            run_id=ctx.run_id,
            pipeline=ctx.pipeline,
            position=ctx.position,
            step=ctx.step,
            attempt=attempt,
            tool=tool,
            workdir=workdir,
            input_dir=input_dir,
            input_commit=input_commit,
            shard=shard,
            extra_env=extra_env,
        )

    async def execute(self, ctx: StepContext, spec: ContainerSpec, adopted: Handle | None = None) -> Outcome:
        """Run the object on the step's backend to its end (its log is kept meanwhile, and after
        it in the background: ``GET /runs/{id}/log`` waits for a keep under way); raises MaoError
        when the backend cannot run it."""
        return await self.execution.run(spec, backend_of(ctx.step, self.settings), adopted)

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
            await self.records.note_step(
                ctx.run_id,
                ctx.step.name,
                StepFacts(output_commit=exc.commit, conflicts=exc.paths, merge_state=MergeState.CONFLICT),
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
            await self.records.note_step(
                ctx.run_id, ctx.step.name, StepFacts(conflicts=exc.paths, merge_state=MergeState.CONFLICT)
            )
            raise StepFailed(exc.message, status=StepStatus.CONFLICT) from exc
        if vote.conflicts:
            await self.records.note_step(
                ctx.run_id, ctx.step.name, StepFacts(conflicts=vote.conflicts, merge_state=MergeState.CONFLICT)
            )
            raise StepFailed(
                f"step {ctx.step.name}: {ctx.branch} conflicts with ground-truth of {ctx.output.name} in "
                + ", ".join(vote.conflicts[:10]),
                status=StepStatus.CONFLICT,
            )
        return vote.commit, vote.state

    @contextlib.asynccontextmanager
    async def branch(self, ctx: StepContext, adopted: Adopted | None = None) -> AsyncIterator[str | None]:
        """The node branch's work folder, held (None); or, for a run side by side that finds it busy,
        a folder of the run's own (its lane: the run id), removed afterwards. Two pipelines with a
        step of the same name share a node branch and its work folder (they wait for each other).
        An adopted attempt keeps the folder its tool was given."""
        lock = self._branch_locks.setdefault((ctx.output.name, ctx.branch), asyncio.Lock())
        if (adopted is not None and adopted.lane is not None) or (
            adopted is None and ctx.side_by_side and lock.locked()
        ):
            lane = ctx.run_id
            try:
                yield lane
            finally:
                # Kept when its tool runs on: the next process adopts it there.
                if not self.execution.detaching:
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


def redact(text: str, secrets: dict[str, str] | None) -> str:
    """A tool that prints its secret must not publish it through the run record."""
    for value in sorted((secrets or {}).values(), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text
