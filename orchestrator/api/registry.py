"""The federation registries: ``/registry/tools``, ``/registry/datasets``, ``/registry/pipelines``."""

from __future__ import annotations

from aiohttp import web

from ..datasets import redact
from ..datasets.masters import resolve_master
from ..errors import NotFound
from ..models import Dataset, Tool
from .common import node, ok, parse, path_name, read_json

routes = web.RouteTableDef()


@routes.get("/registry/tools")
async def list_tools(request: web.Request) -> web.Response:
    return ok(await node(request).registry.tool_names())


@routes.get("/registry/tools/{name}")
async def get_tool(request: web.Request) -> web.Response:
    name = path_name(request, what="tool name")
    tool = await node(request).registry.tool(name)
    if tool is None:
        raise NotFound(f"tool {name!r} is not registered")
    return ok(tool.model_dump())


@routes.post("/registry/tools")
async def add_tool(request: web.Request) -> web.Response:
    tool = parse(Tool, await read_json(request))
    await node(request).registry.put_tool(tool)
    return ok(tool.model_dump())


@routes.delete("/registry/tools/{name}")
async def delete_tool(request: web.Request) -> web.Response:
    name = path_name(request, what="tool name")
    await node(request).registry.delete_tool(name)
    return ok({"name": name, "deleted": True})


@routes.get("/registry/datasets")
async def list_datasets(request: web.Request) -> web.Response:
    return ok(await node(request).registry.dataset_names())


@routes.get("/registry/datasets/{name}")
async def get_dataset(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    dataset = await node(request).registry.dataset(name)
    if dataset is None:
        raise NotFound(f"dataset {name!r} is not registered")
    # A registration older than the credentials check may still carry some: never show them.
    return ok({**dataset.model_dump(), "master": redact(dataset.master)})


@routes.post("/registry/datasets")
async def add_dataset(request: web.Request) -> web.Response:
    dataset = parse(Dataset, await read_json(request))
    resolve_master(dataset.master, node(request).settings.master_roots)  # 400 outside the roots
    stored = await node(request).registry.put_dataset(dataset)
    return ok(stored.model_dump())


@routes.delete("/registry/datasets/{name}")
async def delete_dataset(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    await node(request).registry.delete_dataset(name)
    return ok({"name": name, "deleted": True})


@routes.get("/registry/pipelines")
async def list_registered_pipelines(request: web.Request) -> web.Response:
    return ok(await node(request).registry.pipeline_names())


@routes.get("/registry/pipelines/{name}")
async def get_registered_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    registration = await node(request).registry.pipeline(name)
    if registration is None:
        raise NotFound(f"pipeline {name!r} is not registered in the federation")
    return ok(registration)
