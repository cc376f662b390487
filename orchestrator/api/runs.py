"""Run history: ``GET /runs``, ``GET /runs/{id}``, ``POST /runs/{id}/cancel``, ``POST /runs/{id}/retry``,
``GET /queue``; schedules: ``GET /jobs``, ``DELETE /jobs/{id}``."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from executor.wire.names import name_problem

from ..errors import BadRequest, NotFound
from ..request_models import NoBody
from ..runs.retry import request_retry
from ..scheduling.ticks import with_next_ticks
from ..store.grid import RunGrid, run_grid
from .common import ID_RE, ok, parse, path_id, read_json
from .facades import RUNS, facade
from .openapi import doc
from .pipelines import refuse_changed_registrations
from .run_schemas import (
    MAX_GRID_PIPELINES,
    CancelStarted,
    GridQuery,
    QueueEntry,
    RetryRequest,
    RetryStarted,
    Run,
    RunsQuery,
)
from .schedule_schemas import JobDeleted, Schedule, SchedulesQuery

routes = web.RouteTableDef()


@routes.get("/runs")
@doc(
    "This instance's runs, newest first (steps without their log tails)",
    query=RunsQuery,
    answer=list[Run],
    tags=("runs",),
)
async def list_runs(request: web.Request) -> web.Response:
    query = parse(RunsQuery, dict(request.query), codes={"pipeline": "invalid_name"})
    runs = await facade(request, RUNS).store.list_runs(
        pipeline=query.pipeline, status=query.status, limit=query.limit, trigger=query.trigger
    )
    return ok([run.to_json() for run in runs])


# Before /runs/{id}: routes match in the order they were added.
@routes.get("/runs/grid")
@doc(
    "Each pipeline's last N runs with their steps' states, in one answer (the console's grid)",
    query=GridQuery,
    answer=RunGrid,
    tags=("runs",),
)
async def grid(request: web.Request) -> web.Response:
    """Rows are pipelines (``pipelines=a,b``, or every pipeline defined here or with runs here, by
    name); each row holds its ``last`` newest runs (filtered by ``status`` and ``trigger``) with each
    step's state, attempt count and duration, the run's queue time and duration."""
    query = parse(GridQuery, dict(request.query), codes={"pipelines": "invalid_name"})
    if len(query.names() or ()) > MAX_GRID_PIPELINES:
        raise BadRequest(f"at most {MAX_GRID_PIPELINES} pipelines at once", code="invalid_request")
    answer = await run_grid(
        facade(request, RUNS).store, query.last, query.names(), status=query.status, trigger=query.trigger
    )
    # Up to 10,000 runs: encoded off the event loop too.
    return web.Response(text=await asyncio.to_thread(json.dumps, answer), content_type="application/json")


@routes.get("/runs/{id}")
@doc("One run with its steps, commits and log tails", answer=Run, errors=(400, 404, 503), tags=("runs",))
async def get_run(request: web.Request) -> web.Response:
    run_id = path_id(request)
    run = await facade(request, RUNS).store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r} on this instance")
    return ok(run.to_json())


@routes.get("/queue")
@doc(
    "The runs waiting to start (status queued), in the order they will be considered",
    answer=list[QueueEntry],
    errors=(),
    tags=("runs",),
)
async def list_queue(request: web.Request) -> web.Response:
    """Queued runs with their 1-based ``position``: higher ``priority`` first, then older; each says
    what it waits for (the instance's ``MAO_MAX_ACTIVE_RUNS``, or its pipeline's running run). A run
    whose pipeline is busy is passed over, so a later one may start before it."""
    return ok(facade(request, RUNS).runner.admission.listing())


@routes.post("/runs/{id}/cancel")
@doc(
    "Cancel a run: a running one's containers are killed at once, a queued one ends without starting (202)",
    body=NoBody,
    body_required=False,
    answer=CancelStarted,
    status=202,
    errors=(400, 404, 409, 503),
    tags=("runs",),
)
async def cancel_run(request: web.Request) -> web.Response:
    """202 once stopping has begun (containers are killed at once; poll ``GET /runs/{id}`` for the
    end); a queued run is ``cancelled`` at once, without starting; 409 when the run has already ended.
    It takes no fields: no body, or ``{}``."""
    run_id = path_id(request)
    parse(NoBody, await read_json(request, optional=True))
    await facade(request, RUNS).runner.cancel(run_id)
    return ok({"id": run_id, "status": "cancelling"}, status=202)


@routes.post("/runs/{id}/retry")
@doc(
    "Retry a failed or cancelled run from its failed step: a new run reusing the steps it got done (202)",
    body=RetryRequest,
    body_required=False,
    answer=RetryStarted,
    status=202,
    more=((200, Run),),
    errors=(400, 404, 409, 503),
    tags=("runs",),
)
async def retry_run(request: web.Request) -> web.Response:
    """A new run of the same pipeline (trigger ``retry``, ``retry_of`` the run retried) that takes over
    every step the run got done (status ``reused``: its commits, no container) and runs its failed,
    cancelled and skipped steps and everything downstream of them. ``definition``: ``recorded`` (the
    version the run ran with, the default) or ``current`` (a step whose definition changed since
    runs again). A step whose output dataset's ground-truth moved since (someone merged) runs again;
    each step's ``reason`` says why it was reused or ran. It starts as any run does (the queue, the
    pipeline's running run: 409 ``run_in_progress``). 409 ``not_retryable`` for a run that did not
    fail and was not cancelled; ``wait: true`` answers 200 with the ended retry's record."""
    run_id = path_id(request)
    body = parse(RetryRequest, await read_json(request, optional=True))
    the_node = facade(request, RUNS)

    async def refuse(pipeline: str) -> None:  # a 409 now rather than a retry that fails at once
        await refuse_changed_registrations(the_node, pipeline)

    started = await request_retry(the_node.runner, run_id, body.definition, refuse, the_node.door)
    if not body.wait:
        return ok(started.public(), status=202)
    record = await the_node.runner.wait(started.id)  # the record its run read once it ended
    if record is None:  # it ended before this wait began, or without a record read
        record = await the_node.store.get_run(started.id)
    return ok(record.to_json() if record is not None else None)


@routes.get("/jobs")
@doc(
    "Every armed schedule's next run time, by job id (both scopes)",
    answer=dict[str, str | None],
    errors=(),
    tags=("schedules",),
)
async def list_jobs(request: web.Request) -> web.Response:
    """Every armed schedule's next run time: this instance's and the federation-wide ones; data
    triggers (which have no next run time) with null."""
    the_node = facade(request, RUNS)
    return ok({**await the_node.triggers.jobs(), **the_node.scheduler.next_run_times()})


@routes.get("/schedules")
@doc(
    "This instance's schedules with their next run and recent ticks",
    query=SchedulesQuery,
    answer=list[Schedule],
    tags=("schedules",),
)
async def list_schedules(request: web.Request) -> web.Response:
    """This instance's schedules and data triggers with their policies, next run and recent ticks
    (``?ticks=N``, default 20, at most 1000, newest first): fired, skipped or missed, each with why."""
    the_node = facade(request, RUNS)
    query = parse(SchedulesQuery, dict(request.query))
    next_runs = the_node.scheduler.next_run_times()
    schedules = await the_node.store.list_schedules()
    ticks = await the_node.store.recent_ticks([s.id for s in schedules], query.ticks) if query.ticks else {}
    answer = [
        {
            **s.public(),
            "next_run_time": next_runs.get(s.id),
            "ticks": [t.public() for t in ticks.get(s.id, [])],
        }
        for s in schedules
    ]
    return ok(with_next_ticks(answer, query.next))


@routes.delete("/jobs/{id}")
@doc(
    "Unschedule (this instance's or a federation-wide schedule)",
    answer=JobDeleted,
    errors=(400, 404, 503),
    tags=("schedules",),
)
async def delete_job(request: web.Request) -> web.Response:
    """Remove a schedule (or data trigger) by its id, or, as the prototype did, every local schedule
    of a pipeline by the pipeline's name."""
    job_id = request.match_info["id"]
    is_id, is_name = bool(ID_RE.fullmatch(job_id)), name_problem(job_id, "pipeline name") is None
    if not (is_id or is_name):
        raise BadRequest(f"invalid id {job_id[:80]!r}", code="invalid_id")
    the_node = facade(request, RUNS)
    if is_id:
        try:
            await the_node.scheduler.remove(job_id)
            return ok({"job_id": job_id, "deleted": True, "scope": "instance"})
        except NotFound:
            pass
    # Before etcd is asked: a pipeline's local schedules go even while the federation is away.
    if is_name and (removed := await the_node.scheduler.remove_pipeline(job_id)):
        return ok({"job_id": job_id, "deleted": True, "scope": "instance", "removed": removed})
    if is_id and await the_node.federation_scheduler.remove(job_id):
        return ok({"job_id": job_id, "deleted": True, "scope": "federation"})
    raise NotFound(f"no scheduled job {job_id!r} (neither on this instance nor federation-wide)")
