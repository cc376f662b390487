"""The gateway: ``POST /write``, ``/read``, ``/inspect`` (gateway keys or the admin token) and
``/gateway/keys`` (the admin token only)."""

from __future__ import annotations

from aiohttp import web

from ..domain.pipeline import Name, Request
from ..errors import MaoError
from ..gateway.tokens import ADMIN, Principal
from .common import ok, parse, path_name, read_json
from .facades import GATEWAY, facade
from .openapi import doc
from .schemas import GatewayKey, JsonObject, KeyRequest, Revoked, WriteRequest

routes = web.RouteTableDef()
PRINCIPAL = "mao_principal"  # request key under which the auth middleware leaves the Principal


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    return found if isinstance(found, Principal) else ADMIN


GATEWAY_ERRORS = (400, 403, 404, 413, 429, 503)


@routes.post("/write")
@doc(
    "Write a raw entry (kept MAO_RAW_TTL s)",
    body=WriteRequest,
    answer=JsonObject,
    errors=GATEWAY_ERRORS,
    tags=("gateway",),
)
async def write(request: web.Request) -> web.Response:
    metrics = facade(request, GATEWAY).metrics
    try:
        wanted = parse(WriteRequest, await read_json(request))
        stored = await facade(request, GATEWAY).raw.write(
            wanted.key, wanted.value, by=principal(request).name
        )
    except MaoError as exc:
        metrics.gateway_write(exc.code)
        raise
    metrics.gateway_write("ok")
    return ok(stored)


@routes.post("/read")
@doc(
    "Read an insight or a raw entry",
    body=KeyRequest,
    answer=JsonObject,
    errors=GATEWAY_ERRORS,
    tags=("gateway",),
)
async def read(request: web.Request) -> web.Response:
    wanted = parse(KeyRequest, await read_json(request))
    return ok(await facade(request, GATEWAY).raw.read(wanted.key))


@routes.post("/inspect")
@doc(
    "List the entries under a prefix",
    body=KeyRequest,
    answer=JsonObject,
    errors=GATEWAY_ERRORS,
    tags=("gateway",),
)
async def inspect(request: web.Request) -> web.Response:
    wanted = parse(KeyRequest, await read_json(request))
    return ok(await facade(request, GATEWAY).raw.inspect(wanted.key))


class NewKey(Request):
    name: Name


@routes.post("/gateway/keys")
@doc(
    "Create a gateway key (the key is shown once)",
    body=NewKey,
    answer=GatewayKey,
    status=201,
    errors=(400, 409, 503),
    tags=("gateway",),
)
async def create_key(request: web.Request) -> web.Response:
    wanted = parse(NewKey, await read_json(request))
    return ok(await facade(request, GATEWAY).gateway_keys.create(wanted.name), status=201)


@routes.get("/gateway/keys")
@doc(
    "The gateway keys (names and dates, never the keys)",
    answer=list[GatewayKey],
    errors=(503,),
    tags=("gateway",),
)
async def list_keys(request: web.Request) -> web.Response:
    return ok(await facade(request, GATEWAY).gateway_keys.list())


@routes.delete("/gateway/keys/{name}")
@doc("Revoke a gateway key", answer=Revoked, errors=(400, 404, 503), tags=("gateway",))
async def revoke_key(request: web.Request) -> web.Response:
    name = path_name(request, what="gateway key name")
    await facade(request, GATEWAY).gateway_keys.revoke(name)
    return ok({"name": name, "revoked": True})
