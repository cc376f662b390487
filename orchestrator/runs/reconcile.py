"""What a restart does with the runs a previous process left unfinished (it was killed mid-run).

For each such run: its containers are removed (the executor also removes every leftover of this
instance when it starts); a step that was running is ``succeeded`` if its merge did land (a commit
on the output dataset's ground-truth carries the run's ``MAO-Run`` and the step's ``MAO-Step``
trailers), else ``failed``; steps that never started are ``skipped``; running attempts end
``cancelled``; the run ends ``failed`` with the reason (``succeeded`` if every step turned out to have
landed). Runs are not resumed: a fresh run costs one trigger, a half-resumed one could merge twice.
"""

from __future__ import annotations

import logging
from typing import Any

from ..datasets import DatasetRepo, Datasets
from ..domain.states import AttemptStatus, MergeState, RunStatus, StepStatus
from ..errors import MaoError
from ..executors import ExecutorBackend, KillRequest
from ..merging.pins import Pins
from ..store.runs import RunRecords, UnfinishedRun
from ..store.tables import utcnow

log = logging.getLogger(__name__)

REASON = "interrupted: the orchestrator stopped during the run"
# How far back in ground-truth a landed merge is looked for.
LOG_DEPTH = 500


class Reconciler:
    def __init__(
        self,
        records: RunRecords,
        executor: ExecutorBackend,
        pins: Pins,
        datasets: Datasets,
    ) -> None:
        self.records = records
        self.executor = executor
        self.pins = pins
        self.datasets = datasets

    async def reconcile(self) -> int:
        """Close every unfinished run; returns how many there were."""
        runs = await self.records.unfinished()
        for run in runs:
            try:
                await self._close(run)
            except MaoError as exc:
                log.warning("run %s not reconciled yet: %s", run.id, exc.message)
        return len(runs)

    async def _close(self, run: UnfinishedRun) -> None:
        try:
            removed = await self.executor.kill(KillRequest(run=run.id))
            if removed:
                log.info("run %s: removed leftover container(s) %s", run.id, ", ".join(removed))
        except MaoError as exc:
            log.warning(
                "run %s: containers not checked (%s); the executor removes leftovers at its start",
                run.id,
                exc.message,
            )
        now = utcnow()
        landed_all = True
        for step in run.steps:
            if step.status is StepStatus.PENDING:
                landed_all = False
                await self.records.update_step(run.id, step.name, status=StepStatus.SKIPPED, error=REASON)
            elif step.status is StepStatus.RUNNING:
                merge = await self._landed(run.id, run.pipeline, step.name, step.output_dataset)
                if merge is not None:
                    log.info("run %s: step %s had merged (%s); recorded", run.id, step.name, merge)
                    await self.records.update_step(
                        run.id,
                        step.name,
                        status=StepStatus.SUCCEEDED,
                        merge_commit=merge,
                        merge_state=MergeState.MERGED,
                        ended_at=now,
                    )
                else:
                    landed_all = False
                    await self.records.update_step(
                        run.id, step.name, status=StepStatus.FAILED, error=REASON, ended_at=now
                    )
            elif step.status not in (StepStatus.SUCCEEDED, StepStatus.CACHED):
                landed_all = False
        await self.records.end_unfinished_attempts(run.id, AttemptStatus.CANCELLED, REASON)
        status = RunStatus.SUCCEEDED if landed_all and run.steps else RunStatus.FAILED
        await self.records.update_run(
            run.id, status=status, error=None if status is RunStatus.SUCCEEDED else REASON, ended_at=now
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
