"""Pipelines on this instance: ``/pipeline/init``, ``/pipeline``, ``/pipeline/run``, ``/bare-repo/init``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from .. import phases
from ..domain.causes import Fired, Manual, Queued, Refused, RunAsk, Skipped
from ..domain.pipeline import Pipeline
from ..domain.states import RunStatus
from ..errors import MaoError, NotFound
from ..gateway.tokens import ADMIN
from ..merging.pins import changed_error
from ..pipelines.stepcheck import check_enforced
from ..request_models import AcceptRequest, PipelineRequest
from ..runs.admission import RunInProgress
from ..runs.strategies import StepStrategy
from ..scheduling.requests import ArmTrigger, BackfillRequest, RunNow, RunRequest, ScheduleRun, action_of
from .backfills import BackfillStarted
from .common import ok, parse, path_name, read_json
from .facades import PIPELINES, PinsCheck, PipelinesFacade, facade
from .gateway import principal
from .openapi import doc
from .run_schemas import Run, RunStarted
from .schedule_schemas import Scheduled
from .schemas import (
    Accepted,
    BareRepo,
    BareRepoRequest,
    Deleted,
    InitResult,
    PipelinePins,
    PublicPipeline,
    StrategyRequest,
    StrategySteered,
)

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/pipeline/init")
@doc(
    "Initialise (or replace) a pipeline on this instance",
    body=PipelineRequest,
    answer=InitResult,
    tags=("pipelines",),
)
async def init_pipeline(request: web.Request) -> web.Response:
    """A definition that differs from the pipeline's latest version is recorded as a new version
    (``version``, ``new_version``); the same definition again records none. A ``version`` in the body
    (as GET /pipeline/{name} answers it) must still be the latest: 409 ``version_conflict`` otherwise."""
    pipeline = parse(PipelineRequest, await read_json(request))
    return ok(
        await facade(request, PIPELINES).pipelines.init(pipeline, by=who(request), read_at=pipeline.version)
    )


def who(request: web.Request) -> str:
    """Who a write comes from, as versions and backfills record it: a named credential's name, else
    the instance's (the admin token is one shared secret: it names no one)."""
    found = principal(request)
    return facade(request, PIPELINES).settings.instance_name if found is ADMIN else found.name


@routes.get("/pipeline")
@doc("This instance's pipelines", answer=list[PublicPipeline], tags=("pipelines",))
async def list_pipelines(request: web.Request) -> web.Response:
    the_node = facade(request, PIPELINES)
    pipelines = await the_node.store.list_pipelines()
    current = await the_node.pipelines.versions.current()
    strategies = await the_node.runner.strategies.of_all(pipelines)
    return ok([_public(p, current.get(p.name), strategies.get(p.name)) for p in pipelines])


@routes.get("/pipeline/{name}")
@doc("One pipeline of this instance", answer=PublicPipeline, errors=(400, 404, 503), tags=("pipelines",))
async def get_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    the_node = facade(request, PIPELINES)
    pipeline = await _initialised(the_node, name)
    version = (await the_node.pipelines.versions.current([name])).get(name)
    return ok(_public(pipeline, version, await the_node.runner.strategies.of(pipeline)))


@routes.post("/pipeline/{name}/strategy/{step}")
@doc(
    "Force one of a step's strategy tools, or reset its watcher",
    body=StrategyRequest,
    answer=StrategySteered,
    errors=(400, 404, 503),
    tags=("pipelines",),
)
async def steer_strategy(request: web.Request) -> web.Response:
    """``{"force": tool}``: the step's runs start with that tool (then the tools after it) and the
    watcher neither abandons nor probes until ``{"reset": true}``, which forgets every count: every
    tool healthy again, the main active. Each switch is logged; the answer is the step's state."""
    name = path_name(request, what="pipeline name")
    step = path_name(request, "step", what="step name")
    body = parse(StrategyRequest, await read_json(request))
    the_node = facade(request, PIPELINES)
    pipeline = await _initialised(the_node, name)
    state = await the_node.runner.strategies.steer(
        pipeline, step, None if body.reset else body.force, who(request)
    )
    return ok({"pipeline": name, "step": step, **state.public()})


@routes.delete("/pipeline/{name}")
@doc(
    "Delete a pipeline and its schedules (runs stay)",
    answer=Deleted,
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def delete_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    return ok(await facade(request, PIPELINES).pipelines.delete(name))


@routes.post("/pipeline/run")
@doc(
    "Run a pipeline now or queue it (the run record at its end; 202 with wait false), or schedule it with cron",
    body=RunRequest,
    answer=Run | Scheduled,
    more=((202, RunStarted),),
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def run_pipeline(request: web.Request) -> web.Response:
    """Run now and answer with the run's record; ``wait: false`` answers 202 at once. ``cron``
    schedules instead of running: on this instance (``scope: "instance"``, the default; it replaces the
    pipeline's schedule unless ``add: true``) or federation-wide (``scope: "federation"``, optionally
    ``placement: {"labels": {...}}``). ``trigger: {dataset}`` runs it at each ground-truth advance of
    that dataset (a data trigger). Schedules take ``overlap``, ``catchup`` and ``catchup_window``.
    ``priority`` orders the queue a run waits in when the instance is full (``MAO_MAX_ACTIVE_RUNS``)
    or, with ``overlap: "queue"``, its pipeline busy; federation-wide, in the queue of the instance
    that wins the tick or advance. ``version: n`` runs that version of the pipeline's definition
    (404 ``unknown_version``); a schedule or data trigger with a version is a 400: they run the
    pipeline as it is at each tick (initialise the old definition again to schedule it)."""
    the_node = facade(request, PIPELINES)
    match action_of(parse(RunRequest, await read_json(request))):
        case RunNow() as ask:
            return await _run_now(the_node, ask)
        case ScheduleRun(scope="federation") as ask:
            return ok(_scheduled(ask, await the_node.federation_scheduler.schedule(ask)))
        case ScheduleRun() as ask:
            return ok(_scheduled(ask, (await the_node.scheduler.schedule(ask)).public()))
        case ArmTrigger() as ask:
            trigger_id = await the_node.triggers.arm(ask)
            return ok(
                {
                    "pipeline": ask.name,
                    "job_id": trigger_id,
                    "trigger": {"dataset": ask.dataset},
                    "scope": ask.scope,
                }
            )


def _scheduled(ask: ScheduleRun, schedule: dict[str, Any]) -> dict[str, Any]:
    """The answer to a schedule: what was stored (``Scheduled``)."""
    return {
        "pipeline": ask.name,
        "job_id": schedule["id"],
        "cron": schedule["cron"],
        "timezone": schedule["timezone"],
        "scope": ask.scope,
        **({"placement": schedule["placement"]} if ask.scope == "federation" else {}),
        **{k: schedule.get(k) for k in ("overlap", "catchup", "catchup_window", "priority")},
    }


async def _run_now(the_node: PipelinesFacade, ask: RunNow) -> web.Response:
    """Run now. A busy pipeline: "replace" cancels its run(s) first, "queue" waits for them (one
    waiting run per pipeline), "allow" runs beside them; without overlap, a 409 (runs/door.py)."""
    # MAO_PHASE_TIMINGS=1: where a waiting run's time goes (orchestrator/phases.py; the bench's).
    timings = phases.begin(the_node.settings.phase_timings and ask.wait)
    with phases.phase("api: registrations unchanged"):
        # One read of the definition (with its private values and version) for both checks, handed
        # through the door to a run that starts at once (``Runner.start``: while it is still stored).
        with phases.phase("api/definition read (SQL)"):
            read = await the_node.runner.versions.read_current(ask.name)
        pipeline = read.definition.pipeline if read is not None else None
        with phases.phase("api/registrations read and compared with the pins (etcd)"):
            checked = await refuse_changes_of(the_node, pipeline)
        _refuse_unenforceable(the_node, pipeline, ask.version)
    cause = Manual(checked, read)
    door_ask = RunAsk(ask.name, cause, overlap=ask.overlap, priority=ask.priority, version=ask.version)
    match await the_node.door.request_run(door_ask):
        case Refused(error=error):
            raise error
        case Skipped(reason=reason, in_the_way=in_the_way):  # the door refuses a manual run instead
            raise RunInProgress(reason, run_id=in_the_way)
        case Fired(run_id=run_id) | Queued(run_id=run_id) as decision:
            pass
    if not ask.wait:
        status = (RunStatus.QUEUED if isinstance(decision, Queued) else RunStatus.PENDING).value
        return ok({"id": run_id, "run_id": run_id, "pipeline": ask.name, "status": status}, status=202)
    record = await the_node.runner.wait(run_id)
    if record is None:  # the run ended before this wait began, or without a record read
        with phases.phase("api: read the run record"):
            record = await the_node.store.get_run(run_id)
    if timings is not None:
        try:
            ended = time.monotonic()
            await asyncio.to_thread(phases.write, timings, run_id, the_node.settings.data_dir, ended)
        except OSError as exc:  # a bench's aid: never the run's answer's failure
            log.warning("the phase timings of run %s were not written: %s", run_id, exc)
    return ok(record.to_json() if record is not None else None)


@routes.post("/pipeline/backfill")
@doc(
    "Queue one run per tick of a cron in [from, to], started in order, one at a time (or list the ticks)",
    body=BackfillRequest,
    answer=BackfillStarted,
    more=((202, BackfillStarted),),
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def backfill(request: web.Request) -> web.Response:
    """One run per tick of ``cron`` (default: the pipeline's schedule) in ``[from, to]``, with trigger
    ``backfill``: all recorded ``queued`` before the answer, started in order, one at a time (a
    restart continues them), with the backfill they belong to (``backfill_id``: ``GET
    /backfills/{id}``); ``version`` runs them all with that version; ``dry_run`` only lists the ticks."""
    body = parse(BackfillRequest, await read_json(request))
    the_node = facade(request, PIPELINES)
    result = await the_node.backfills.start(body, by=who(request))
    return ok(result, status=200 if body.dry_run else 202)


@routes.post("/bare-repo/init")
@doc(
    "Create a local bare repository usable as a dataset's master",
    body=BareRepoRequest,
    answer=BareRepo,
    tags=("datasets",),
)
async def init_bare_repo(request: web.Request) -> web.Response:
    name = parse(BareRepoRequest, await read_json(request), codes={"name": "invalid_name"}).name
    path, created = await facade(request, PIPELINES).datasets.init_bare(name)
    return ok({"name": name, "path": str(path), "created": created})


async def _initialised(the_node: PipelinesFacade, name: str) -> Pipeline:
    """The pipeline ``name`` of this instance, or a 404."""
    pipeline = await the_node.store.get_pipeline(name)
    if pipeline is None:
        raise NotFound(f"pipeline {name!r} is not initialised on this instance")
    return pipeline


def _refuse_unenforceable(the_node: PipelinesFacade, pipeline: Pipeline | None, version: int | None) -> None:
    """A 400 ``backend_cannot_enforce`` now rather than a run whose step fails at submit: a field its
    backend offered at init and offers no more (``gpus`` after the backend's GPUs went). A version
    run's steps are checked by their backend at submit."""
    if version is None and pipeline is not None:
        check_enforced(pipeline, the_node.settings, the_node.backends)


async def refuse_changed_registrations(the_node: PinsCheck, name: str) -> bool:
    """A 409 ``registration_changed`` now rather than a run that fails at once (``merging.pins``);
    True when the check was made and found nothing changed. When it cannot be made (etcd away),
    the run's own check decides."""
    return await refuse_changes_of(the_node, await the_node.store.get_pipeline(name))


async def refuse_changes_of(the_node: PinsCheck, pipeline: Pipeline | None) -> bool:
    """``refuse_changed_registrations`` of a definition already read (None: not initialised)."""
    if pipeline is None:
        return False
    try:
        changes = await the_node.pipelines.pins.changes(pipeline)
    except MaoError:
        return False
    if changes:
        raise changed_error(pipeline.name, changes)
    return True


@routes.get("/pipeline/{name}/pins")
@doc(
    "What this instance accepted of each registration the pipeline uses, and what differs now",
    answer=PipelinePins,
    errors=(400, 404, 503),
    tags=("pipelines",),
)
async def pipeline_pins(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    the_node = facade(request, PIPELINES)
    pipeline = await _initialised(the_node, name)
    changes = await the_node.pipelines.pins.changes(pipeline)
    pins = await the_node.pipelines.pins.pins(name)
    return ok(
        {
            "name": name,
            "pins": [
                {"kind": p.kind, "name": p.name, **p.value, "pinned_at": p.pinned_at.isoformat()}
                for p in pins
            ],
            "changes": [c.public() for c in changes],
        }
    )


@routes.post("/pipeline/{name}/accept")
@doc(
    "Accept the registrations the pipeline uses as they are now (dry_run: only show the differences)",
    body=AcceptRequest,
    body_required=False,
    answer=Accepted,
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def accept_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    wanted = parse(AcceptRequest, await read_json(request, optional=True))
    return ok(await facade(request, PIPELINES).pipelines.accept(name, dry_run=wanted.dry_run))


def _public(
    pipeline: Pipeline, version: int | None, strategies: dict[str, StepStrategy] | None = None
) -> dict[str, Any]:
    """``strategies`` only for a pipeline with a step that has one (the prototype's answer unchanged)."""
    found: dict[str, Any] = {
        "name": pipeline.name,
        "description": pipeline.description,
        "steps": pipeline.public_steps(),
        "run_timeout": pipeline.run_timeout,
        "version": version,
    }
    if strategies:
        found["strategies"] = {step: s.public() for step, s in strategies.items()}
    return found
