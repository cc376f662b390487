"""The federation registries: ``/registry/tools``, ``/registry/datasets``, ``/registry/pipelines``."""

from __future__ import annotations

from aiohttp import web

from ..datasets import redact
from ..datasets.masters import resolve_master
from ..domain.pipeline import Dataset, Tool
from ..errors import NotFound
from ..request_models import DatasetRequest, ToolRequest
from .common import node, ok, parse, path_name, read_json
from .openapi import doc
from .schemas import Deleted, JsonObject

routes = web.RouteTableDef()


@routes.get("/registry/tools")
@doc("Names of the registered tools", answer=list[str], tags=("registry",))
async def list_tools(request: web.Request) -> web.Response:
    return ok(await node(request).registry.tool_names())


@routes.get("/registry/tools/{name}")
@doc("One tool", answer=Tool, errors=(400, 404, 503), tags=("registry",))
async def get_tool(request: web.Request) -> web.Response:
    name = path_name(request, what="tool name")
    tool = await node(request).registry.tool(name)
    if tool is None:
        raise NotFound(f"tool {name!r} is not registered")
    return ok(tool.model_dump())


@routes.post("/registry/tools")
@doc("Register (or replace) a tool", body=ToolRequest, answer=Tool, tags=("registry",))
async def add_tool(request: web.Request) -> web.Response:
    tool = parse(ToolRequest, await read_json(request))
    await node(request).registry.put_tool(tool)
    return ok(tool.model_dump())


@routes.delete("/registry/tools/{name}")
@doc("Remove a tool no pipeline uses", answer=Deleted, errors=(400, 404, 409, 503), tags=("registry",))
async def delete_tool(request: web.Request) -> web.Response:
    name = path_name(request, what="tool name")
    await node(request).registry.delete_tool(name)
    return ok({"name": name, "deleted": True})


@routes.get("/registry/datasets")
@doc("Names of the registered datasets", answer=list[str], tags=("registry",))
async def list_datasets(request: web.Request) -> web.Response:
    return ok(await node(request).registry.dataset_names())


@routes.get("/registry/datasets/{name}")
@doc("One dataset: its master and node branches", answer=Dataset, errors=(400, 404, 503), tags=("registry",))
async def get_dataset(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    dataset = await node(request).registry.dataset(name)
    if dataset is None:
        raise NotFound(f"dataset {name!r} is not registered")
    # A registration older than the credentials check may still carry some: never show them.
    return ok({**dataset.model_dump(), "master": redact(dataset.master)})


@routes.post("/registry/datasets")
@doc(
    "Register a dataset (re-registering keeps its node branches)",
    body=DatasetRequest,
    answer=Dataset,
    tags=("registry",),
)
async def add_dataset(request: web.Request) -> web.Response:
    dataset = parse(DatasetRequest, await read_json(request)).dataset()
    resolve_master(dataset.master, node(request).settings.master_roots)  # 400 outside the roots
    stored = await node(request).registry.put_dataset(dataset)
    return ok(stored.model_dump())


@routes.delete("/registry/datasets/{name}")
@doc("Remove a dataset no pipeline uses", answer=Deleted, errors=(400, 404, 409, 503), tags=("registry",))
async def delete_dataset(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    await node(request).registry.delete_dataset(name)
    return ok({"name": name, "deleted": True})


@routes.get("/registry/pipelines")
@doc("Names of the federation's pipelines", answer=list[str], tags=("registry",))
async def list_registered_pipelines(request: web.Request) -> web.Response:
    return ok(await node(request).registry.pipeline_names())


@routes.get("/registry/pipelines/{name}")
@doc("A pipeline's federation registration", answer=JsonObject, errors=(400, 404, 503), tags=("registry",))
async def get_registered_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    registration = await node(request).registry.pipeline(name)
    if registration is None:
        raise NotFound(f"pipeline {name!r} is not registered in the federation")
    return ok(registration)
