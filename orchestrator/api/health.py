"""``GET /`` (greeting) and ``GET /health`` (etcd, database and executor, each ``ok`` or the error)."""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from .common import node, ok
from .openapi import doc
from .schemas import Greeting, Health

routes = web.RouteTableDef()


@routes.get("/")
@doc("Greeting: the instance's name and version", answer=Greeting, errors=(), tags=("health",))
async def greeting(request: web.Request) -> web.Response:
    return ok(
        {
            "message": "MAO orchestrator is running",
            "instance": node(request).settings.instance_name,
            "version": __version__,
        }
    )


@routes.get("/health")
@doc(
    "etcd, database and executor each ok or the error (503 when one is not)",
    answer=Health,
    errors=(503,),
    tags=("health",),
)
async def health(request: web.Request) -> web.Response:
    checks = await node(request).health()
    healthy = all(value == "ok" for value in checks.values())
    return ok(
        {
            "status": "ok" if healthy else "degraded",
            "instance": node(request).settings.instance_name,
            **checks,
        },
        status=200 if healthy else 503,
    )
