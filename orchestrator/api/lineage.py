"""``GET /lineage``: datasets and pipelines as a graph (reads, writes, data triggers) with the tools
the steps use, from the federation's registries and this instance (orchestrator/pipelines/lineage.py)."""

from __future__ import annotations

from aiohttp import web

from ..pipelines.lineage import Lineage, collect
from .common import ok
from .facades import LINEAGE, facade
from .openapi import doc

routes = web.RouteTableDef()


@routes.get("/lineage")
@doc(
    "Datasets and pipelines as a graph (which pipeline reads, writes and is triggered by which dataset) "
    "and the tools the steps use",
    answer=Lineage,
    errors=(503,),
    tags=("registry",),
)
async def lineage(request: web.Request) -> web.Response:
    """Nodes are datasets (registered, or named by a step or trigger) and pipelines (this instance's
    and the federation's registrations); edges ``reads``, ``writes`` (with their steps) and
    ``triggers`` (data triggers, with their scope). While etcd is unreachable the answer is this
    instance's part alone and ``etcd`` says so (200, not 503: the console still draws what it can)."""
    the_node = facade(request, LINEAGE)
    graph = await collect(
        the_node.store,
        the_node.registry,
        the_node.federation_scheduler.book.all,
        the_node.settings.instance_name,
    )
    return ok(graph.model_dump(mode="json"))
