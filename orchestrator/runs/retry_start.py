"""A retry's start (``runs/retry.py``): what the new run takes over from the run it retries, planned
when the run starts (``RetryStart.plan``) so that ground-truth is judged as it is then.

The run engine uses ``RetryStart``; the request side (``request_retry``) stays in ``runs/retry.py``,
above the engine, which it asks for the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..datasets import Datasets
from ..domain.pipeline import Pipeline, Step
from ..domain.retry import Action, PastStep, Planned, plan_retry, reused, stale_steps
from ..errors import MaoError, NotFound
from ..merging.pins import Pins
from ..store.run_views import RunView, StepView
from ..store.runs import RunRecords
from ..store.versions import PipelineVersions
from .active import ActiveRun


def taken_over(step: StepView) -> dict[str, Any]:
    """What a reused step takes over from its record in the retried run (by column)."""
    return {
        "image": step.image,
        "image_id": step.image_id,
        "input_commit": step.input_commit,
        "output_commit": step.output_commit,
        "merge_commit": step.merge_commit,
        "merge_state": step.merge,
        "changed": step.changed,
    }


def past_steps(record: RunView) -> dict[str, PastStep]:
    return {s.name: PastStep(s.name, s.status, s.output_dataset, s.merge_commit) for s in record.steps}


def _shape(step: Step) -> str:
    # As the version hash sees a step: defaults left out, secret values never part of it.
    return step.model_dump_json(exclude_defaults=True, exclude={"private_env"})


async def changed_steps(versions: PipelineVersions, record: RunView, pipeline: Pipeline) -> set[str]:
    """Steps of ``pipeline`` whose definition differs from the one the retried run ran: by its
    version when it recorded one, else by what its step records hold (tool and datasets)."""
    number = record.version
    if number is not None and (old := await versions.get(record.pipeline, number)) is not None:
        before = {s.name: _shape(s) for s in old.pipeline_model().steps}
        return {s.name for s in pipeline.steps if s.name in before and before[s.name] != _shape(s)}
    recorded = {s.name: (s.tool, s.input_dataset, s.output_dataset) for s in record.steps}
    return {
        s.name
        for s in pipeline.steps
        if s.name in recorded and recorded[s.name] != (s.tool, s.input_dataset, s.output_dataset)
    }


@dataclass(frozen=True)
class TakeOver:
    """What a retry does with each step when it starts: the plan, and for each reused step the fields
    its record takes from the retried run."""

    plan: list[Planned]
    fields: dict[str, dict[str, Any]]


class RetryStart:
    """The engine's planner of a retry as its run starts (the retried run's record read then)."""

    def __init__(self, records: RunRecords, versions: PipelineVersions, pins: Pins, datasets: Datasets) -> None:
        self.records = records
        self.versions = versions
        self.pins = pins
        self.datasets = datasets

    async def plan(self, run: ActiveRun) -> TakeOver:
        """The plan of a retry that starts now: the retried run's record, the definition's changes,
        and ground-truth of each output dataset a reused step wrote (read now). Raises NotFound when
        the retried run is gone (retention removed it while the retry waited)."""
        assert run.retry_of is not None
        record = await self.records.get(run.retry_of)
        if record is None:
            raise NotFound(f"run {run.retry_of} that this run retries is no longer recorded")
        past = past_steps(record)
        changed = await changed_steps(self.versions, record, run.pipeline)
        first = plan_retry(run.retry_of, past, run.nodes, changed)
        candidates = reused(first)
        tips, unreadable = await self._tips({past[n].output_dataset for n in candidates}, run.pipeline.name)
        stale = stale_steps(run.retry_of, past, candidates, tips, unreadable)
        plan = plan_retry(run.retry_of, past, run.nodes, changed, stale) if stale else first
        steps = {s.name: s for s in record.steps}
        fields = {p.step: taken_over(steps[p.step]) for p in plan if p.action is Action.REUSE}
        return TakeOver(plan, fields)

    async def _tips(self, datasets: set[str], pipeline: str) -> tuple[dict[str, str], dict[str, str]]:
        tips: dict[str, str] = {}
        unreadable: dict[str, str] = {}
        for name in sorted(datasets):
            try:
                # Through the pipeline's pins, as its steps read the dataset.
                dataset = await self.pins.dataset(pipeline, name)
                tips[name] = await self.datasets.sync(dataset.name, dataset.master)
            except MaoError as exc:
                unreadable[name] = exc.message
        return tips, unreadable
