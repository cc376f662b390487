"""The gateway: ``POST /write``, ``/read``, ``/inspect`` (gateway keys or the admin token) and
``/gateway/keys`` (the admin token only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest
from ..gateway.tokens import ADMIN, Principal
from ..models import Model, Name
from .common import node, ok, parse, path_name, read_json

routes = web.RouteTableDef()
PRINCIPAL = "mao_principal"  # request key under which the auth middleware leaves the Principal


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    return found if isinstance(found, Principal) else ADMIN


async def _body(request: web.Request, *fields: str) -> dict[str, Any]:
    body = await read_json(request)
    missing = [f for f in fields if f not in body]
    if missing:
        raise BadRequest(f"the request body needs {' and '.join(missing)}", code="invalid_request")
    return body


@routes.post("/write")
async def write(request: web.Request) -> web.Response:
    body = await _body(request, "key", "value")
    stored = await node(request).raw.write(body["key"], body["value"], by=principal(request).name)
    return ok(stored)


@routes.post("/read")
async def read(request: web.Request) -> web.Response:
    body = await _body(request, "key")
    return ok(await node(request).raw.read(body["key"]))


@routes.post("/inspect")
async def inspect(request: web.Request) -> web.Response:
    body = await _body(request, "key")
    return ok(await node(request).raw.inspect(body["key"]))


class NewKey(Model):
    name: Name


@routes.post("/gateway/keys")
async def create_key(request: web.Request) -> web.Response:
    wanted = parse(NewKey, await read_json(request))
    return ok(await node(request).gateway_keys.create(wanted.name), status=201)


@routes.get("/gateway/keys")
async def list_keys(request: web.Request) -> web.Response:
    return ok(await node(request).gateway_keys.list())


@routes.delete("/gateway/keys/{name}")
async def revoke_key(request: web.Request) -> web.Response:
    name = path_name(request, what="gateway key name")
    await node(request).gateway_keys.revoke(name)
    return ok({"name": name, "revoked": True})
