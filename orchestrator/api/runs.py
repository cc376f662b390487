"""Run history: ``GET /runs``, ``GET /runs/{id}``, ``POST /runs/{id}/cancel``; schedules: ``GET /jobs``,
``DELETE /jobs/{id}``."""

from __future__ import annotations

import re

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..names import name_problem
from ..runs.states import RunStatus
from .common import node, ok

routes = web.RouteTableDef()

RUN_STATUSES = tuple(status.value for status in RunStatus)
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")


def _id(request: web.Request, key: str = "id") -> str:
    value = request.match_info[key]
    if not _ID_RE.fullmatch(value):
        raise BadRequest(f"invalid id {value[:80]!r}", code="invalid_id")
    return value


@routes.get("/runs")
async def list_runs(request: web.Request) -> web.Response:
    query = request.query
    pipeline = query.get("pipeline") or None
    if pipeline and (problem := name_problem(pipeline, "pipeline name")):
        raise BadRequest(problem, code="invalid_name")
    status = query.get("status") or None
    if status and status not in RUN_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(RUN_STATUSES)}", code="invalid_request")
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise BadRequest("limit must be an integer", code="invalid_request") from None
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be between 1 and 1000", code="invalid_request")
    return ok(await node(request).store.list_runs(pipeline=pipeline, status=status, limit=limit))


@routes.get("/runs/{id}")
async def get_run(request: web.Request) -> web.Response:
    run_id = _id(request)
    run = await node(request).store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r} on this instance")
    return ok(run)


@routes.post("/runs/{id}/cancel")
async def cancel_run(request: web.Request) -> web.Response:
    """202 once stopping has begun (containers are killed at once; poll ``GET /runs/{id}`` for the
    end); 409 when the run has already ended."""
    run_id = _id(request)
    await node(request).runner.cancel(run_id)
    return ok({"id": run_id, "status": "cancelling"}, status=202)


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Every armed schedule's next run time: this instance's and the federation-wide ones; data
    triggers (which have no next run time) with null."""
    the_node = node(request)
    return ok({**await the_node.triggers.jobs(), **the_node.scheduler.next_run_times()})


@routes.get("/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    """This instance's schedules and data triggers with their policies, next run and recent ticks
    (``?ticks=N``, default 20, at most 1000, newest first): fired, skipped or missed, each with why."""
    the_node = node(request)
    try:
        limit = int(request.query.get("ticks", "20"))
    except ValueError:
        raise BadRequest("ticks must be an integer", code="invalid_request") from None
    if not 0 <= limit <= 1000:
        raise BadRequest("ticks must be between 0 and 1000", code="invalid_request")
    next_runs = the_node.scheduler.next_run_times()
    schedules = await the_node.store.list_schedules()
    return ok(
        [
            {
                **s,
                "next_run_time": next_runs.get(s["id"]),
                "ticks": await the_node.store.list_ticks(s["id"], limit=limit) if limit else [],
            }
            for s in schedules
        ]
    )


@routes.delete("/jobs/{id}")
async def delete_job(request: web.Request) -> web.Response:
    """Remove a schedule (or data trigger) by its id, or, as the prototype did, every local schedule
    of a pipeline by the pipeline's name."""
    job_id = request.match_info["id"]
    is_id, is_name = bool(_ID_RE.fullmatch(job_id)), name_problem(job_id, "pipeline name") is None
    if not (is_id or is_name):
        raise BadRequest(f"invalid id {job_id[:80]!r}", code="invalid_id")
    the_node = node(request)
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
