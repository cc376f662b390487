"""Retry from the failed step (``POST /runs/{id}/retry``): a new run of the same pipeline that takes
over every step the retried run got done (``reused``: its commits, no container) and runs the rest
and everything downstream of it (the plan: ``domain/retry.py``).

``request_retry`` checks the request and asks the door every run takes (``runs/door.py``, cause
``Retry``: admission, the queue, overlap) for the run, with the version the retried run ran (or the
pipeline's current one) pinned. The plan itself is made when the run starts (``RetryStart.plan``),
so a retry that waited in the queue, or across a restart, judges ground-truth as it is then: a step
whose output dataset moved since the retried run runs again, saying so in its ``reason``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..datasets import Datasets
from ..domain.causes import Fired, Queued, Refused, Retry, RunAsk, Skipped
from ..domain.pipeline import Pipeline, Step
from ..domain.retry import Action, Definition, PastStep, Planned, plan_retry, reused, stale_steps
from ..domain.states import RunStatus
from ..errors import Conflict, MaoError, NotFound
from ..merging.pins import Pins
from ..store.run_views import RunView, StepView
from ..store.runs import RunRecords
from ..store.versions import PipelineVersions
from .active import ActiveRun
from .admission import RunInProgress
from .door import Door, RunDoor

if TYPE_CHECKING:
    from .engine import Runner

log = logging.getLogger(__name__)

RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
TRIGGER = Retry.trigger  # a retry's runs: trigger ``retry``


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


@dataclass(frozen=True)
class RetryStarted:
    """``POST /runs/{id}/retry``'s answer: the new run, and the plan as it stands now (a step planned
    ``reuse`` runs after all when its output dataset moved by the time the run starts)."""

    id: str
    pipeline: str
    status: str
    retry_of: str
    version: int | None
    definition: Definition
    plan: list[Planned] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.id,
            "pipeline": self.pipeline,
            "status": self.status,
            "retry_of": self.retry_of,
            "version": self.version,
            "definition": self.definition.value,
            "plan": [{"step": p.step, "action": p.action.value, "reason": p.reason} for p in self.plan],
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


async def request_retry(
    runner: Runner,
    run_id: str,
    definition: Definition,
    refuse: Callable[[str], Awaitable[None]] | None = None,
    door: Door | None = None,
) -> RetryStarted:
    """Start the retry of run ``run_id``. NotFound: no such run (or its pipeline is gone); Conflict
    (409): the run did not fail and was not cancelled (``not_retryable``), or it recorded no version
    to run again (``version_unknown``); RunInProgress (409): the pipeline is busy. ``refuse(pipeline)``
    raises what a run of the pipeline would meet at once (the API's check of the pins), once the
    request itself is known to be sound. ``door``: the node's (by default one over ``runner``)."""
    record = await runner.records.get(run_id)
    if record is None:
        raise NotFound(f"no run {run_id!r} on this instance")
    status = record.status
    if status not in RETRYABLE:
        raise Conflict(
            f"run {run_id} is {status.value}: only a failed or cancelled run can be retried",
            code="not_retryable",
            status=status.value,
        )
    name = record.pipeline
    if definition is Definition.RECORDED:
        version = record.version
        if version is None:
            raise Conflict(
                f"run {run_id} recorded no pipeline version (it ran before versions existed): retry it "
                'with {"definition": "current"}',
                code="version_unknown",
            )
    else:
        version = (await runner.versions.current([name])).get(name)
        if version is None:
            raise NotFound(f"pipeline {name!r} is not initialised on this instance (POST /pipeline/init)")
    found = await runner.versions.for_run(name, version)
    if found is None:
        raise NotFound(f"pipeline {name!r} is not initialised on this instance (POST /pipeline/init)")
    plan = plan_retry(
        run_id, past_steps(record), found.pipeline.graph(), await changed_steps(runner.versions, record, found.pipeline)
    )
    if refuse is not None:
        await refuse(name)
    door = door or RunDoor(runner, runner.settings.instance_name)
    match await door.request_run(RunAsk(name, Retry(run_id), version=version)):
        case Refused(error=error):
            raise error
        case Skipped(reason=reason, in_the_way=in_the_way):  # the door refuses a manual run instead
            raise RunInProgress(reason, run_id=in_the_way)
        case Fired(run_id=new_id):
            state = "pending"
        case Queued(run_id=new_id):
            state = "queued"
    log.info("run %s of %s retries run %s (%s definition, version %s)", new_id, name, run_id, definition, version)
    return RetryStarted(new_id, name, state, run_id, version, definition, plan)


@dataclass(frozen=True)
class TakeOver:
    """What a retry does with each step when it starts: the plan, and for each reused step the fields
    its record takes from the retried run."""

    plan: list[Planned]
    fields: dict[str, dict[str, Any]]


class RetryStart:
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
