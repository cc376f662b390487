"""Peer validation: ``POST /audits`` starts an audit, ``GET /audits/{id}`` shows it (pending, then
its result)."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from ..audit.records import DEFAULT_WAIT, MAX_WAIT, MIN_WAIT, check_id
from ..domain.pipeline import Name, Request
from .common import ok, parse, read_json
from .facades import AUDITS, facade
from .openapi import doc
from .schemas import JsonObject

routes = web.RouteTableDef()


class NewAudit(Request):
    dataset: Name
    file: str = Field(min_length=1, max_length=1024)
    wait: float = Field(default=DEFAULT_WAIT, ge=MIN_WAIT, le=MAX_WAIT)


@routes.post("/audits")
@doc(
    "Start a peer validation of a dataset's file",
    body=NewAudit,
    answer=JsonObject,
    status=202,
    errors=(400, 404, 503),
    tags=("audits",),
)
async def start_audit(request: web.Request) -> web.Response:
    wanted = parse(NewAudit, await read_json(request))
    audit = await facade(request, AUDITS).audits.begin(wanted.dataset, wanted.file, wanted.wait)
    return ok(audit, status=202)


@routes.get("/audits/{id}")
@doc("An audit: pending, then its result", answer=JsonObject, errors=(400, 404, 503), tags=("audits",))
async def get_audit(request: web.Request) -> web.Response:
    audit_id = check_id(request.match_info["id"])
    return ok(await facade(request, AUDITS).audits.get(audit_id))
