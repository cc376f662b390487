"""``GET /locks``: the federation's locks held right now, and by whom."""

from __future__ import annotations

from aiohttp import web

from ..federation import keys
from .common import ok
from .facades import LOCKS, facade
from .openapi import doc
from .schemas import Lock

routes = web.RouteTableDef()


@routes.get("/locks")
@doc("Ground-truth locks held now, and by whom", answer=list[Lock], errors=(503,), tags=("federation",))
async def list_locks(request: web.Request) -> web.Response:
    holders = await facade(request, LOCKS).locks.holders()
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
