"""``GET /backends``: where this instance's steps can run (``MAO_BACKENDS``): each backend's name,
kind, capabilities, health, and how many attempts run there now."""

from __future__ import annotations

from aiohttp import web

from .common import ok
from .facades import BACKENDS, facade
from .openapi import doc
from .schemas import BackendInfo

routes = web.RouteTableDef()


@routes.get("/backends")
@doc(
    "Every backend steps can run on: name, kind, capabilities, health and attempts running there",
    answer=list[BackendInfo],
    errors=(),
    tags=("health",),
)
async def backends(request: web.Request) -> web.Response:
    the_node = facade(request, BACKENDS)
    configured = the_node.backends
    health = await configured.health()
    running = the_node.runner.execution.running()
    answer = []
    for backend in configured:
        capabilities = backend.capabilities()
        state = health[backend.name]
        answer.append(
            {
                "name": backend.name,
                "kind": configured.kinds[backend.name],
                "default": backend.name == configured.default,
                "capabilities": {
                    "kind": capabilities.kind,
                    "data_modes": sorted(capabilities.data_modes),
                    "enforces": sorted(capabilities.enforces),
                    "log_follow": capabilities.log_follow,
                    "gpus": capabilities.gpus,
                    "max_parallel": capabilities.max_parallel,
                    "notes": list(capabilities.notes),
                },
                "health": {
                    "kind": configured.kinds[backend.name],
                    "ok": state.ok,
                    "message": state.message,
                    **({"details": state.details} if state.details else {}),
                },
                "running": running.get(backend.name, 0),
            }
        )
    return ok(answer)
