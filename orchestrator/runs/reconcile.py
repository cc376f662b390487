"""What a start does with the runs a previous process left unfinished (it was killed, or shut down
mid-run), and with the objects it left on the backends.

A run is resumed when every step it had running can go on:
- its running attempt's object is still on its backend (``list_managed``: found by its name and
  labels): the attempt is adopted, never submitted again; its end and full log are recorded as if
  nothing had happened, and the run goes on (commit, vote, the next steps: ``Runner.resume``);
- or it has no running attempt and its merge did land (a commit on the output dataset's
  ground-truth carries the run's ``MAO-Run`` and the step's ``MAO-Step`` trailers): it is recorded
  ``succeeded``, never merged twice.
A fan-out step that was running, a step between attempts or mid-commit, a backend that cannot be
asked, or a pipeline changed or gone: the run cannot be resumed and is closed as before resuming
existed: its objects are removed (and checked gone), a running step is ``succeeded`` if its merge
landed, else ``failed``; steps that never started are ``skipped``; running attempts end
``cancelled``; the run ends ``failed`` with the reason (``succeeded`` if every step landed).

Then the sweep (``Execution.sweep``) removes every object of this instance that no attempt is
watching: objects of ended or unknown runs, leftovers of a crash; it runs again periodically.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from ..datasets import DatasetRepo, Datasets
from ..domain.pipeline import Pipeline
from ..domain.states import DONE_STEP, AttemptStatus, MergeState, RunStatus, StepStatus
from ..errors import MaoError
from ..executors.seam import RUN_LABEL, Handle, Managed
from ..merging.pins import Pins
from ..store import Store
from ..store.run_changes import RunChange, StepChange, StepFacts
from ..store.runs import RunRecords, UnfinishedRun, UnfinishedStep
from ..store.tables import utcnow
from .attempt import Adopted
from .engine import Runner

log = logging.getLogger(__name__)

REASON = "interrupted: the orchestrator stopped during the run"
# How far back in ground-truth a landed merge is looked for.
LOG_DEPTH = 500


class NotResumable(Exception):
    """Why a run cannot go on (one sentence, for the log)."""


class Reconciler:
    def __init__(
        self,
        runner: Runner,
        store: Store,
        pins: Pins,
        datasets: Datasets,
    ) -> None:
        self.runner = runner
        self.records: RunRecords = runner.records
        self.store = store
        self.pins = pins
        self.datasets = datasets

    async def reconcile(self) -> tuple[int, int]:
        """Resume or close every unfinished run; (resumed, closed)."""
        runs = await self.records.unfinished()
        if not runs:
            return 0, 0
        found = await self._objects()
        resumed = closed = 0
        for run in runs:
            try:
                pipeline, adopted, steps = await self._plan(run, found)
            except NotResumable as why:
                log.warning("run %s of %s cannot be resumed: %s", run.id, run.pipeline, why)
                try:
                    await self._close(run)
                    closed += 1
                except MaoError as exc:
                    log.warning("run %s not reconciled yet: %s", run.id, exc.message)
                continue
            except MaoError as exc:
                log.warning("run %s not reconciled yet: %s", run.id, exc.message)
                continue
            await self.runner.resume(replace(run, steps=steps), pipeline, adopted)
            resumed += 1
        return resumed, closed

    async def _objects(self) -> dict[str, dict[str, Managed] | None]:
        """Every backend's objects of this instance by name (None: the backend cannot be asked)."""
        found: dict[str, dict[str, Managed] | None] = {}
        for backend in self.runner.backends:
            try:
                found[backend.name] = {
                    m.handle.name: m for m in await backend.list_managed(self.runner.settings.instance_name)
                }
            except MaoError as exc:
                log.warning("backend %s cannot be asked for its objects: %s", backend.name, exc.message)
                found[backend.name] = None
        return found

    async def _plan(
        self, run: UnfinishedRun, found: dict[str, dict[str, Managed] | None]
    ) -> tuple[Pipeline, dict[str, Adopted], list[UnfinishedStep]]:
        """The pipeline, the attempts to adopt by step, and the steps as they stand now; or
        NotResumable."""
        pipeline = await self.store.get_pipeline(run.pipeline, with_secrets=True)
        if pipeline is None:
            raise NotResumable(f"pipeline {run.pipeline} is gone")
        if [s.name for s in pipeline.steps] != [s.name for s in run.steps]:
            raise NotResumable(f"pipeline {run.pipeline} was initialised again with other steps")
        adopted: dict[str, Adopted] = {}
        steps = []
        for step in run.steps:
            if step.status is StepStatus.RUNNING:
                # First: a merge that landed is the step's end, whatever its records say (its
                # attempt's object may still be there: adopting it would merge twice).
                merge = await self._landed(run.id, run.pipeline, step.name, step.output_dataset)
                if merge is not None:
                    await self._landed_step(run.id, step.name, merge)
                    await self.records.end_unfinished_attempts(run.id, AttemptStatus.SUCCEEDED, None, step.name)
                    steps.append(replace(step, status=StepStatus.SUCCEEDED))
                    continue
                definition = pipeline.step(step.name)
                running = [a for a in step.attempts if a.status is AttemptStatus.RUNNING]
                if definition.fan_out is not None or any(a.shard is not None for a in step.attempts):
                    raise NotResumable(f"its fan-out step {step.name} was running")
                if not running:
                    raise NotResumable(f"step {step.name} was between attempts or committing")
                (attempt,) = running[-1:]
                backend = attempt.backend or self.runner.backends.default
                on_backend = found.get(backend)
                if on_backend is None:
                    raise NotResumable(f"backend {backend} of step {step.name} cannot be asked (or is not configured)")
                managed = on_backend.get(attempt.container or "")
                if managed is None or managed.labels.get(RUN_LABEL) != run.id:
                    raise NotResumable(f"the object of step {step.name} (attempt {attempt.attempt}) is gone")
                position = next(i for i, s in enumerate(pipeline.steps) if s.name == step.name)
                scratch = self.runner.settings.data_dir / "tmp" / run.id / f"{position}-{attempt.attempt}"
                lane = run.id if run.side_by_side and await self._has_lane(step, run) else None
                adopted[step.name] = Adopted(
                    attempt_id=attempt.id,
                    number=attempt.attempt,
                    tool=attempt.tool,
                    handle=Handle(
                        backend=backend, name=managed.handle.name, engine_id=managed.handle.engine_id or attempt.engine_id
                    ),
                    input_dir=scratch if definition.input_dataset else None,
                    input_commit=step.input_commit,
                    lane=lane,
                )
            steps.append(step)
        return pipeline, adopted, steps

    async def _has_lane(self, step: UnfinishedStep, run: UnfinishedRun) -> bool:
        master = await self.pins.master(step.output_dataset, scope=run.pipeline)
        if master is None:
            return False
        return await self.datasets.run(
            step.output_dataset, master, lambda repo: repo.has_lane(step.branch, run.id)
        )

    async def _landed_step(self, run_id: str, step: str, merge: str) -> None:
        log.info("run %s: step %s had merged (%s); recorded", run_id, step, merge)
        await self.records.change_step(
            StepChange(
                run_id,
                step,
                StepStatus.SUCCEEDED,
                StepFacts(merge_commit=merge, merge_state=MergeState.MERGED, ended_at=utcnow()),
            )
        )

    async def _close(self, run: UnfinishedRun) -> None:
        removed = await self.runner.execution.remove_run(run.id)
        if removed:
            log.info("run %s: removed leftover object(s) %s", run.id, ", ".join(removed))
        now = utcnow()
        landed_all = True
        for step in run.steps:
            if step.status is StepStatus.PENDING:
                landed_all = False
                await self.records.change_step(
                    StepChange(run.id, step.name, StepStatus.SKIPPED, StepFacts(error=REASON))
                )
            elif step.status is StepStatus.RUNNING:
                merge = await self._landed(run.id, run.pipeline, step.name, step.output_dataset)
                if merge is not None:
                    await self._landed_step(run.id, step.name, merge)
                else:
                    landed_all = False
                    await self.records.change_step(
                        StepChange(run.id, step.name, StepStatus.FAILED, StepFacts(error=REASON, ended_at=now))
                    )
            elif step.status not in DONE_STEP:
                landed_all = False
        await self.records.end_unfinished_attempts(run.id, AttemptStatus.CANCELLED, REASON)
        status = RunStatus.SUCCEEDED if landed_all and run.steps else RunStatus.FAILED
        await self.records.change_run(
            RunChange(run.id, status, ended_at=now, error=None if status is RunStatus.SUCCEEDED else REASON)
        )
        log.warning("run %s of %s left unfinished by a previous process: %s", run.id, run.pipeline, status)

    async def _landed(self, run_id: str, pipeline: str, step: str, dataset_name: str) -> str | None:
        """The ground-truth commit that merged this step of this run, if any (read from the master
        this instance accepted for the pipeline: ``merging.pins``)."""
        master = await self.pins.master(dataset_name, scope=pipeline)
        if master is None:
            return None

        def search(repo: DatasetRepo) -> str | None:
            repo.sync()
            entries: list[dict[str, Any]] = repo.log(max_count=LOG_DEPTH)
            for entry in entries:
                trailers = entry.get("trailers") or {}
                if trailers.get("MAO-Run") == run_id and trailers.get("MAO-Step") == step:
                    return str(entry["commit"])
            return None

        try:
            return await self.datasets.run(dataset_name, master, search)
        except MaoError as exc:
            log.warning("run %s: ground-truth of %s not checked: %s", run_id, dataset_name, exc.message)
            return None
