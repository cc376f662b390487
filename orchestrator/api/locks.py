"""``GET /locks``: the federation's locks held right now, and by whom."""

from __future__ import annotations

from aiohttp import web

from ..federation import keys
from .common import node, ok

routes = web.RouteTableDef()


@routes.get("/locks")
async def list_locks(request: web.Request) -> web.Response:
    holders = await node(request).locks.holders()
    dataset_prefix = keys.dataset_lock("")
    return ok(
        [
            {
                "key": h["key"],
                "dataset": h["key"].removeprefix(dataset_prefix)
                if h["key"].startswith(dataset_prefix)
                else None,
                "instance": h.get("instance"),
                "purpose": h.get("purpose"),
                "acquired_at": h.get("acquired_at"),
            }
            for h in holders
        ]
    )
