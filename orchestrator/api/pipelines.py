"""Pipelines on this instance: ``/pipeline/init``, ``/pipeline``, ``/pipeline/run``, ``/bare-repo/init``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..models import Pipeline
from .common import node, ok, parse, path_name, read_json
from .openapi import doc
from .schemas import (
    BareRepo,
    BareRepoRequest,
    Deleted,
    InitResult,
    PublicPipeline,
    Run,
    RunRequest,
    RunStarted,
    Scheduled,
)

routes = web.RouteTableDef()

RUN_CODES = {
    "name": "invalid_name",
    "cron": "invalid_cron",
    "timezone": "invalid_timezone",
    "scope": "invalid_scope",
    "placement": "invalid_placement",
}


@routes.post("/pipeline/init")
@doc(
    "Initialise (or replace) a pipeline on this instance",
    body=Pipeline,
    answer=InitResult,
    tags=("pipelines",),
)
async def init_pipeline(request: web.Request) -> web.Response:
    pipeline = parse(Pipeline, await read_json(request))
    return ok(await node(request).pipelines.init(pipeline))


@routes.get("/pipeline")
@doc("This instance's pipelines", answer=list[PublicPipeline], tags=("pipelines",))
async def list_pipelines(request: web.Request) -> web.Response:
    pipelines = await node(request).store.list_pipelines()
    return ok([_public(p) for p in pipelines])


@routes.get("/pipeline/{name}")
@doc("One pipeline of this instance", answer=PublicPipeline, errors=(400, 404, 503), tags=("pipelines",))
async def get_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    pipeline = await node(request).store.get_pipeline(name)
    if pipeline is None:
        raise NotFound(f"pipeline {name!r} is not initialised on this instance")
    return ok(_public(pipeline))


@routes.delete("/pipeline/{name}")
@doc(
    "Delete a pipeline and its schedules (runs stay)",
    answer=Deleted,
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def delete_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    return ok(await node(request).pipelines.delete(name))


@routes.post("/pipeline/run")
@doc(
    "Run a pipeline now (the run record at its end; 202 with wait false), or schedule it with cron",
    body=RunRequest,
    answer=Run | Scheduled,
    more=((202, RunStarted),),
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def run_pipeline(request: web.Request) -> web.Response:
    """Run now and answer with the run's record; ``wait: false`` answers 202 at once; ``cron``
    schedules instead of running: on this instance (``scope: "instance"``, the default) or
    federation-wide (``scope: "federation"``, optionally ``placement: {"labels": {...}}``)."""
    wanted = parse(RunRequest, await read_json(request), codes=RUN_CODES)
    name, cron = wanted.name, wanted.cron
    the_node = node(request)
    scope = wanted.scope or "instance"
    if scope == "federation" and cron in (None, ""):
        raise BadRequest("a federation-wide schedule needs a cron expression", code="invalid_cron")
    if wanted.placement is not None and scope != "federation":
        raise BadRequest('placement only applies to scope "federation"', code="invalid_placement")
    if cron:
        timezone = wanted.timezone or "UTC"
        if scope == "federation":
            schedule = await the_node.federation_scheduler.add(name, cron, timezone, wanted.placement)
        else:
            schedule = await the_node.scheduler.add(name, cron, timezone)
        return ok(
            {
                "pipeline": name,
                "job_id": schedule["id"],
                "cron": schedule["cron"],
                "timezone": schedule["timezone"],
                "scope": scope,
                **({"placement": schedule["placement"]} if scope == "federation" else {}),
            }
        )
    run_id = await the_node.runner.start(name, trigger="manual")
    if not wanted.wait:
        return ok({"id": run_id, "run_id": run_id, "pipeline": name, "status": "pending"}, status=202)
    await the_node.runner.wait(run_id)
    return ok(await the_node.store.get_run(run_id))


@routes.post("/bare-repo/init")
@doc(
    "Create a local bare repository usable as a dataset's master",
    body=BareRepoRequest,
    answer=BareRepo,
    tags=("datasets",),
)
async def init_bare_repo(request: web.Request) -> web.Response:
    name = parse(BareRepoRequest, await read_json(request), codes={"name": "invalid_name"}).name
    path, created = await node(request).datasets.init_bare(name)
    return ok({"name": name, "path": str(path), "created": created})


def _public(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "steps": pipeline.public_steps(),
        "run_timeout": pipeline.run_timeout,
    }
