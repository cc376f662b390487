"""``GET /`` (greeting) and ``GET /health`` (etcd, database and executor, each ``ok`` or the error)."""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from .common import node, ok
from .openapi import doc
from .schemas import Greeting, Health

routes = web.RouteTableDef()
LEGACY_WARNING = (
    "MAO_API_LEGACY_OPEN=1: this API answers without a token to every local user and program; "
    "give clients the token and unset it"
)


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
    answer: dict[str, object] = {
        "status": "ok" if healthy else "degraded",
        "instance": node(request).settings.instance_name,
        **checks,
    }
    warnings = node(request).warnings()
    if node(request).settings.api_legacy_open:
        warnings = [LEGACY_WARNING, *warnings]
    if warnings:
        answer["warnings"] = warnings
    return ok(answer, status=200 if healthy else 503)
