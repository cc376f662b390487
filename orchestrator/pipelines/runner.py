"""Runs a pipeline: every step, in order, each one container plus a commit and a ground-truth vote.

One run per pipeline at a time on an instance. A step's input is a snapshot of its input dataset's
``ground-truth`` taken when the step starts, so step 2 sees what step 1 just merged. A step that fails
(non-zero exit, timeout, git or executor error) fails the run, skips the rest and pushes nothing.

A run does not need etcd: registrations come from this instance's copy when etcd is unreachable, and
the vote is then queued (see ``voting``). A later step whose input is an earlier step's dataset then
reads ground-truth as it is, without the queued merge; its ``input_commit`` says exactly what it read.

After a step succeeds, an ``insights.json`` in its output is published under ``insights/<tool>``
(``gateway.insights``); the step's ``insights`` field says whether it was, or why not.

Tool containers get ``MAO_INSTANCE``, ``MAO_RUN_ID``, ``MAO_PIPELINE`` and ``MAO_STEP`` in their
environment (set last, so a step's own env cannot override them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..config import Settings
from ..datasets import Datasets
from ..errors import Conflict, MaoError, NotFound
from ..executor_client import ExecutorClient
from ..gateway.insights import InsightsPublisher, read_insights
from ..logs import RUN_ID, STEP
from ..metrics import UNSERVED, Metrics
from ..models import Pipeline, Step, node_branch
from ..store import Store
from ..store.tables import utcnow
from .registrations import Registrations
from .voting import Voting

log = logging.getLogger(__name__)


class RunInProgress(Conflict):
    code = "run_in_progress"


class StepFailed(Exception):
    """A step ended without success; ``status`` is ``failed`` or ``conflict``."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Runner:
    metrics: Metrics = UNSERVED  # the node's, set by Node.build

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registrations: Registrations,
        datasets: Datasets,
        executor: ExecutorClient,
        voting: Voting,
        insights: InsightsPublisher,
    ) -> None:
        self.settings = settings
        self.insights = insights
        self.store = store
        self.registrations = registrations
        self.datasets = datasets
        self.executor = executor
        self.voting = voting
        self._active: dict[str, str] = {}  # pipeline name -> run id
        self._tasks: dict[str, asyncio.Task[None]] = {}  # run id -> task
        self._branch_locks: dict[tuple[str, str], asyncio.Lock] = {}

    def active_run(self, pipeline: str) -> str | None:
        return self._active.get(pipeline)

    async def start(self, name: str, trigger: str, schedule_id: str | None = None) -> str:
        """Record a run and start it in the background; returns its id at once."""
        if name in self._active:
            raise RunInProgress(
                f"pipeline {name!r} is already running (run {self._active[name]}); wait for it to end",
                run_id=self._active[name],
            )
        run_id = uuid.uuid4().hex
        self._active[name] = run_id  # reserved before any await: two requests cannot both start
        try:
            pipeline = await self.store.get_pipeline(name, with_secrets=True)
            if pipeline is None:
                raise NotFound(f"pipeline {name!r} is not initialised on this instance (POST /pipeline/init)")
            branches = [node_branch(s.name, self.settings.instance_name) for s in pipeline.steps]
            await self.store.create_run(run_id, pipeline, trigger, branches, schedule_id)
        except BaseException:
            self._active.pop(name, None)
            raise
        task = asyncio.create_task(self._execute(run_id, pipeline), name=f"run {run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))
        log.info("run %s of pipeline %s started (%s)", run_id, name, trigger)
        return run_id

    async def wait(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None:
            # Shielded: a client that hangs up does not cancel the run it started.
            await asyncio.shield(task)

    async def shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one run --------------------------------------------------------------------------------
    async def _execute(self, run_id: str, pipeline: Pipeline) -> None:
        scratch = self.settings.data_dir / "tmp" / run_id
        position = 0
        RUN_ID.set(run_id)  # this task's log lines carry the run (MAO_LOG_FORMAT=json)
        try:
            await self.store.update_run(run_id, status="running", started_at=utcnow())
            for position, step in enumerate(pipeline.steps):
                STEP.set(step.name)
                try:
                    await self._run_step(run_id, position, step, pipeline, scratch)
                except StepFailed as failure:
                    await self._finish_failed(run_id, position, len(pipeline.steps), failure)
                    log.info(
                        "run %s of %s failed at step %s: %s",
                        run_id,
                        pipeline.name,
                        step.name,
                        failure.message,
                    )
                    return
            # Only if still running: a queued merge that conflicted meanwhile has failed the run already.
            await self.store.finish_run(run_id, status="succeeded", ended_at=utcnow())
            log.info("run %s of %s succeeded (%d steps)", run_id, pipeline.name, len(pipeline.steps))
        except asyncio.CancelledError:
            await self._close_quietly(
                run_id, position, len(pipeline.steps), "cancelled: the orchestrator shut down"
            )
            raise
        except Exception as exc:
            log.exception("run %s of %s failed unexpectedly", run_id, pipeline.name)
            await self._close_quietly(run_id, position, len(pipeline.steps), f"internal error: {exc}")
        finally:
            self._active.pop(pipeline.name, None)
            with contextlib.suppress(Exception):
                if (record := await self.store.get_run(run_id)) is not None:
                    self.metrics.observe_run(record)
            # Input snapshots can be large: delete them off the event loop.
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True))

    async def _finish_failed(self, run_id: str, position: int, count: int, failure: StepFailed) -> None:
        now = utcnow()
        await self.store.update_step(
            run_id, position, status=failure.status, error=failure.message, ended_at=now
        )
        for later in range(position + 1, count):
            await self.store.update_step(run_id, later, status="skipped")
        await self.store.update_run(run_id, status="failed", error=failure.message, ended_at=now)

    async def _close_quietly(self, run_id: str, position: int, count: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self._finish_failed(run_id, position, count, StepFailed(reason)))

    async def _run_step(
        self, run_id: str, position: int, step: Step, pipeline: Pipeline, scratch: Path
    ) -> None:
        instance = self.settings.instance_name
        branch = node_branch(step.name, instance)
        await self.store.update_step(run_id, position, status="running", started_at=utcnow())
        try:
            # From etcd, or this instance's copy while etcd is unreachable: a run needs no quorum.
            tool = await self.registrations.tool(step.tool)
            if tool is None:
                raise StepFailed(f"tool {step.tool!r} is no longer registered")
            output = await self.registrations.dataset(step.output_dataset)
            if output is None:
                raise StepFailed(f"dataset {step.output_dataset!r} is no longer registered")
            await self.store.update_step(run_id, position, image=tool.image)

            input_dir: Path | None = None
            input_commit: str | None = None
            if step.input_dataset:
                source = await self.registrations.dataset(step.input_dataset)
                if source is None:
                    raise StepFailed(f"dataset {step.input_dataset!r} is no longer registered")
                input_dir = scratch / f"{position}-input"
                input_dir.mkdir(parents=True)
                destination = input_dir

                def take_snapshot(repo: Any) -> str:
                    repo.sync()
                    return str(repo.snapshot(destination))

                input_commit = await self.datasets.run(source.name, source.master, take_snapshot)
                await self.store.update_step(run_id, position, input_commit=input_commit)

            async with self._branch(output.name, branch):

                def prepare(repo: Any) -> tuple[Path, str]:
                    repo.sync()
                    return repo.prepare_worktree(branch)

                workdir, parent = await self.datasets.run(output.name, output.master, prepare)
                result = await self.executor.run(
                    self._container_request(
                        run_id, pipeline.name, position, step, tool.image, workdir, input_dir
                    ),
                    timeout=(step.timeout or self.settings.step_timeout) + 120,
                )
                await self.store.update_step(
                    run_id,
                    position,
                    exit_code=result.exit_code,
                    image_id=result.image_id,
                    log_tail=_redact(result.log_tail, step.private_env),
                )
                if result.timed_out:
                    raise StepFailed(
                        f"step {step.name} timed out after {step.timeout or self.settings.step_timeout:g} s"
                    )
                if result.exit_code != 0:
                    raise StepFailed(f"step {step.name} exited with code {result.exit_code}")

                trailers = {
                    "MAO-Run": run_id,
                    "MAO-Pipeline": pipeline.name,
                    "MAO-Step": step.name,
                    "MAO-Instance": instance,
                    "MAO-Tool": f"{tool.name} ({tool.image})",
                    "MAO-Tool-Image": result.image_id or "unknown",
                    "MAO-Input-Commit": input_commit or "none",
                }
                message = f"{pipeline.name}/{step.name}: output of run {run_id}"
                commit, changed = await self.datasets.run(
                    output.name,
                    output.master,
                    lambda repo: repo.commit_worktree(branch, parent, message, trailers),
                )
                await self.store.update_step(run_id, position, output_commit=commit, changed=changed)
                # Read now, while the folder holds exactly what was committed; published once the
                # step has succeeded.
                insights = await asyncio.to_thread(read_insights, workdir)

            merge_message = f"Merge {branch} into ground-truth (run {run_id}, step {step.name})"
            vote = await self.voting.vote((run_id, position), output, branch, commit, merge_message, trailers)
            if vote.conflicts:
                await self.store.update_step(
                    run_id, position, conflicts=vote.conflicts, merge_state="conflict"
                )
                raise StepFailed(
                    f"step {step.name}: {branch} conflicts with ground-truth of {output.name} in "
                    + ", ".join(vote.conflicts[:10]),
                    status="conflict",
                )
            # A queued merge (federation unreachable) still counts as success: the output is committed
            # and pushed on the node branch, and the vote follows when etcd answers again.
            published = None
            if insights is not None:
                published = await self.insights.publish(
                    insights,
                    tool=tool.name,
                    pipeline=pipeline.name,
                    run=run_id,
                    step=step.name,
                    commit=commit,
                )
            await self.store.update_step(
                run_id,
                position,
                status="succeeded",
                merge_commit=vote.commit,
                merge_state=vote.state,
                insights=published,
                ended_at=utcnow(),
            )
        except MaoError as exc:
            raise StepFailed(exc.message) from exc

    def _container_request(
        self,
        run_id: str,
        pipeline: str,
        position: int,
        step: Step,
        image: str,
        workdir: Path,
        input_dir: Path | None,
    ) -> dict[str, Any]:
        # Set last, so a step cannot pretend to run elsewhere: tools may use these to tell where they run.
        identity = {
            "MAO_INSTANCE": self.settings.instance_name,
            "MAO_RUN_ID": run_id,
            "MAO_PIPELINE": pipeline,
            "MAO_STEP": step.name,
        }
        env = {**(step.env or {}), **(step.private_env or {}), **identity}
        return {
            "name": f"mao-{self.settings.instance_name}-{run_id[:12]}-{position}",
            "image": image,
            "cmd": step.cmd,
            "env": env or None,
            "output_dir": str(self.settings.host_path(workdir)),
            "input_dir": str(self.settings.host_path(input_dir)) if input_dir else None,
            "user": f"{os.getuid()}:{os.getgid()}",
            "docker_socket": step.docker_socket,
            "timeout": step.timeout or self.settings.step_timeout,
            "labels": {"mao.run": run_id, "mao.step": step.name},
        }

    @contextlib.asynccontextmanager
    async def _branch(self, dataset: str, branch: str) -> AsyncIterator[None]:
        """Two pipelines with a step of the same name share a node branch and its work folder."""
        lock = self._branch_locks.setdefault((dataset, branch), asyncio.Lock())
        async with lock:
            yield


def _redact(text: str, secrets: dict[str, str] | None) -> str:
    """A tool that prints its secret must not publish it through the run record."""
    for value in sorted((secrets or {}).values(), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text
