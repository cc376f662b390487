"""The federation registries: ``/registry/tools``, ``/registry/datasets``, ``/registry/pipelines``.

In legacy open mode (``MAO_API_LEGACY_OPEN=1``) ``GET /registry/tools/{name}`` and ``GET
/registry/datasets/{name}`` answer in the prototype's shape: the entry as a JSON-encoded *string*
(the prototype handed back the value it kept in etcd), which its clients decode a second time. The
default is the object itself; maoctl and the console read both.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..datasets import redact
from ..datasets.masters import resolve_master
from ..domain.pipeline import Dataset, Tool
from ..errors import BadRequest, NotFound
from ..federation.ownership import Kind, Provenance
from ..request_models import AcceptRequest, DatasetRequest, OwnerRequest, ToolRequest
from .common import ok, parse, path_name, read_json
from .facades import REGISTRY, facade
from .openapi import doc
from .schemas import Deleted, JsonObject, Ownership, RegistrationAccepted

routes = web.RouteTableDef()


@routes.get("/registry/tools")
@doc("Names of the registered tools", answer=list[str], tags=("registry",))
async def list_tools(request: web.Request) -> web.Response:
    return ok(await facade(request, REGISTRY).registry.tool_names())


def _entry(request: web.Request, entry: dict[str, Any]) -> web.Response:
    if facade(request, REGISTRY).settings.api_legacy_open:
        return ok(json.dumps(entry))  # the prototype's shape: a string holding the entry's JSON
    return ok(entry)


@routes.get("/registry/tools/{name}")
@doc(
    "One tool (in legacy open mode: as a JSON-encoded string, the prototype's shape)",
    answer=Tool,
    errors=(400, 404, 502, 503),
    tags=("registry",),
)
async def get_tool(request: web.Request) -> web.Response:
    name = path_name(request, what="tool name")
    tool = await facade(request, REGISTRY).registry.tool(name)
    if tool is None:
        raise NotFound(f"tool {name!r} is not registered")
    return _entry(request, tool.model_dump())


@routes.post("/registry/tools")
@doc(
    "Register a tool, or change one this instance owns",
    body=ToolRequest,
    answer=Tool,
    errors=(400, 403, 502, 503),
    tags=("registry",),
)
async def add_tool(request: web.Request) -> web.Response:
    tool = parse(ToolRequest, await read_json(request))
    await facade(request, REGISTRY).registry.put_tool(tool)
    return ok(tool.model_dump())


@routes.delete("/registry/tools/{name}")
@doc(
    "Remove a tool this instance owns and no pipeline uses",
    answer=Deleted,
    errors=(400, 403, 404, 409, 503),
    tags=("registry",),
)
async def delete_tool(request: web.Request) -> web.Response:
    name = path_name(request, what="tool name")
    await facade(request, REGISTRY).registry.delete_tool(name)
    return ok({"name": name, "deleted": True})


@routes.get("/registry/datasets")
@doc("Names of the registered datasets", answer=list[str], tags=("registry",))
async def list_datasets(request: web.Request) -> web.Response:
    return ok(await facade(request, REGISTRY).registry.dataset_names())


@routes.get("/registry/datasets/{name}")
@doc(
    "One dataset: its master and node branches (in legacy open mode: as a JSON-encoded string)",
    answer=Dataset,
    errors=(400, 404, 502, 503),
    tags=("registry",),
)
async def get_dataset(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    dataset = await facade(request, REGISTRY).registry.dataset(name)
    if dataset is None:
        raise NotFound(f"dataset {name!r} is not registered")
    # A registration older than the credentials check may still carry some: never show them.
    return _entry(request, {**dataset.model_dump(), "master": redact(dataset.master)})


@routes.post("/registry/datasets")
@doc(
    "Register a dataset, or change one this instance owns (its node branches are kept)",
    body=DatasetRequest,
    answer=Dataset,
    errors=(400, 403, 502, 503),
    tags=("registry",),
)
async def add_dataset(request: web.Request) -> web.Response:
    dataset = parse(DatasetRequest, await read_json(request)).dataset()
    resolve_master(dataset.master, facade(request, REGISTRY).settings.master_roots)  # 400 outside the roots
    stored = await facade(request, REGISTRY).registry.put_dataset(dataset)
    return ok(stored.model_dump())


@routes.delete("/registry/datasets/{name}")
@doc(
    "Remove a dataset this instance owns and no pipeline uses",
    answer=Deleted,
    errors=(400, 403, 404, 409, 503),
    tags=("registry",),
)
async def delete_dataset(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    await facade(request, REGISTRY).registry.delete_dataset(name)
    return ok({"name": name, "deleted": True})


@routes.get("/registry/pipelines")
@doc("Names of the federation's pipelines", answer=list[str], tags=("registry",))
async def list_registered_pipelines(request: web.Request) -> web.Response:
    return ok(await facade(request, REGISTRY).registry.pipeline_names())


@routes.get("/registry/pipelines/{name}")
@doc(
    "A pipeline's federation registration (with its owner)",
    answer=JsonObject,
    errors=(400, 404, 502, 503),
    tags=("registry",),
)
async def get_registered_pipeline(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    registration = await facade(request, REGISTRY).registry.pipeline(name)
    if registration is None:
        raise NotFound(f"pipeline {name!r} is not registered in the federation")
    return ok(registration)


KINDS = {kind.plural: kind for kind in Kind}


def _kind(request: web.Request) -> Kind:
    kind = KINDS.get(request.match_info["kind"])
    if kind is None:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}", code="invalid_kind")
    return kind


def _ownership(kind: Kind, name: str, provenance: Provenance) -> dict[str, object]:
    return {"kind": kind.value, "name": name, **provenance.public()}


@routes.get("/registry/{kind}/{name}/owner")
@doc(
    "Who owns a registration, and how that is known (signature, claim without TLS, none: unowned)",
    answer=Ownership,
    errors=(400, 404, 502, 503),
    tags=("registry",),
)
async def get_owner(request: web.Request) -> web.Response:
    kind = _kind(request)
    name = path_name(request, what=f"{kind} name")
    return ok(_ownership(kind, name, await facade(request, REGISTRY).registry.owner(kind, name)))


@routes.post("/registry/{kind}/{name}/owner")
@doc(
    "Hand a registration this instance owns over to another instance, or claim one nobody owns",
    body=OwnerRequest,
    answer=Ownership,
    errors=(400, 403, 404, 502, 503),
    tags=("registry",),
)
async def set_owner(request: web.Request) -> web.Response:
    kind = _kind(request)
    name = path_name(request, what=f"{kind} name")
    wanted = parse(OwnerRequest, await read_json(request), codes={"owner": "invalid_name"})
    provenance = await facade(request, REGISTRY).registry.hand_over(kind, name, wanted.owner)
    return ok(_ownership(kind, name, provenance))


@routes.post("/registry/{kind}/{name}/accept")
@doc(
    "Accept a tool's or dataset's registration as it is now, in every pipeline of this instance that "
    "pinned it (dry_run: only show the differences)",
    body=AcceptRequest,
    body_required=False,
    answer=RegistrationAccepted,
    errors=(400, 409, 503),
    tags=("registry",),
)
async def accept_registration(request: web.Request) -> web.Response:
    kind = _kind(request)
    if kind is Kind.PIPELINE:
        raise BadRequest(
            "a pipeline's registration is not pinned: accept what a pipeline uses with "
            "POST /pipeline/{name}/accept",
            code="invalid_kind",
        )
    name = path_name(request, what=f"{kind} name")
    wanted = parse(AcceptRequest, await read_json(request, optional=True))
    accepted = await facade(request, REGISTRY).pipelines.pins.accept_registration(
        kind.value, name, wanted.dry_run
    )
    return ok(
        {
            "kind": kind.value,
            "name": name,
            "dry_run": wanted.dry_run,
            "scopes": {scope: [c.public() for c in changes] for scope, changes in accepted.items()},
        }
    )
