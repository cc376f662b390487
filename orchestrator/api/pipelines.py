"""Pipelines on this instance: ``/pipeline/init``, ``/pipeline``, ``/pipeline/run``, ``/bare-repo/init``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..models import Pipeline
from ..names import name_problem
from .common import node, ok, parse, path_name, read_json

routes = web.RouteTableDef()

SCOPES = ("instance", "federation")


@routes.post("/pipeline/init")
async def init_pipeline(request: web.Request) -> web.Response:
    pipeline = parse(Pipeline, await read_json(request))
    return ok(await node(request).pipelines.init(pipeline))


@routes.get("/pipeline")
async def list_pipelines(request: web.Request) -> web.Response:
    pipelines = await node(request).store.list_pipelines()
    return ok([_public(p) for p in pipelines])


@routes.get("/pipeline/{name}")
async def get_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    pipeline = await node(request).store.get_pipeline(name)
    if pipeline is None:
        raise NotFound(f"pipeline {name!r} is not initialised on this instance")
    return ok(_public(pipeline))


@routes.delete("/pipeline/{name}")
async def delete_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    return ok(await node(request).pipelines.delete(name))


@routes.post("/pipeline/run")
async def run_pipeline(request: web.Request) -> web.Response:
    """Run now and answer with the run's record; ``wait: false`` answers 202 at once; ``cron``
    schedules instead of running: on this instance (``scope: "instance"``, the default) or
    federation-wide (``scope: "federation"``, optionally ``placement: {"labels": {...}}``)."""
    body = await read_json(request)
    name = body.get("name")
    if problem := name_problem(name, "pipeline name"):
        raise BadRequest(problem, code="invalid_name")
    assert isinstance(name, str)
    the_node = node(request)
    cron = body.get("cron")
    scope = body.get("scope") or "instance"
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}", code="invalid_scope")
    if scope == "federation" and cron in (None, ""):
        raise BadRequest("a federation-wide schedule needs a cron expression", code="invalid_cron")
    if body.get("placement") is not None and scope != "federation":
        raise BadRequest('placement only applies to scope "federation"', code="invalid_placement")
    if cron not in (None, ""):
        timezone = body.get("timezone") or "UTC"
        if scope == "federation":
            schedule = await the_node.federation_scheduler.add(name, cron, timezone, body.get("placement"))
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
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        raise BadRequest("wait must be true or false", code="invalid_request")
    run_id = await the_node.runner.start(name, trigger="manual")
    if not wait:
        return ok({"id": run_id, "run_id": run_id, "pipeline": name, "status": "pending"}, status=202)
    await the_node.runner.wait(run_id)
    return ok(await the_node.store.get_run(run_id))


@routes.post("/bare-repo/init")
async def init_bare_repo(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = body.get("name")
    if problem := name_problem(name, "repository name"):
        raise BadRequest(problem, code="invalid_name")
    assert isinstance(name, str)
    path, created = await node(request).datasets.init_bare(name)
    return ok({"name": name, "path": str(path), "created": created})


def _public(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "steps": pipeline.public_steps(),
        "run_timeout": pipeline.run_timeout,
    }
