"""Retry from the failed step (``POST /runs/{id}/retry``): a new run of the same pipeline that takes
over every step the retried run got done (``reused``: its commits, no container) and runs the rest
and everything downstream of it (the plan: ``domain/retry.py``).

``request_retry`` checks the request and asks the door every run takes (``runs/door.py``, cause
``Retry``: admission, the queue, overlap) for the run, with the version the retried run ran (or the
pipeline's current one) pinned. The plan itself is made when the run starts (``RetryStart.plan`` in
``runs/retry_start.py``, which the engine uses), so a retry that waited in the queue, or across a
restart, judges ground-truth as it is then: a step whose output dataset moved since the retried run
runs again, saying so in its ``reason``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..domain.causes import Fired, Queued, Refused, Retry, RunAsk, Skipped
from ..domain.retry import Definition, Planned, plan_retry
from ..domain.states import RunStatus
from ..errors import Conflict, NotFound
from .admission import RunInProgress
from .door import Door, RunDoor
from .retry_start import changed_steps, past_steps

if TYPE_CHECKING:
    from .engine import Runner

log = logging.getLogger(__name__)

RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
TRIGGER = Retry.trigger  # a retry's runs: trigger ``retry``


@dataclass(frozen=True)
class RetryStarted:
    """``POST /runs/{id}/retry``'s answer: the new run, and the plan as it stands now (a step planned
    ``reuse`` runs after all when its output dataset moved by the time the run starts)."""

    id: str
    pipeline: str
    status: RunStatus
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
            state = RunStatus.PENDING
        case Queued(run_id=new_id):
            state = RunStatus.QUEUED
    log.info("run %s of %s retries run %s (%s definition, version %s)", new_id, name, run_id, definition, version)
    return RetryStarted(new_id, name, state, run_id, version, definition, plan)
