"""``GET /registry/datasets/{name}/history``: a dataset's ``ground-truth`` history as this instance
sees it (fetched from the master first), each commit with its provenance trailers (``MAO-Run``,
``MAO-Step``, ``MAO-Input-Commit`` ...), for the console and for operators."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from ..datasets.repo import DatasetRepo
from ..domain.pipeline import Query
from ..errors import Conflict, NotFound
from .common import ok, parse, path_name
from .facades import HISTORY, facade
from .openapi import doc
from .schemas import Out

routes = web.RouteTableDef()


class HistoryQuery(Query):
    limit: int = Field(default=20, ge=1, le=200)


class Commit(Out):
    commit: str
    author: str
    email: str
    date: str
    subject: str
    trailers: dict[str, str]


@routes.get("/registry/datasets/{name}/history")
@doc(
    "A dataset's ground-truth history with provenance trailers, newest first",
    query=HistoryQuery,
    answer=list[Commit],
    errors=(400, 404, 409, 502, 503),
    tags=("registry",),
)
async def dataset_history(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    limit = parse(HistoryQuery, dict(request.query)).limit
    the_node = facade(request, HISTORY)
    dataset = await the_node.registry.dataset(name)
    if dataset is None:
        raise NotFound(f"dataset {name!r} is not registered")
    # Read from the master this instance accepted (merging.pins), never one swapped in since.
    master = await the_node.pipelines.pins.master(name)
    if master is None:
        raise Conflict(
            f"this instance has not accepted a master for dataset {name!r} (no pipeline here uses it), "
            "so it reads none: initialise a pipeline that uses it first",
            code="not_accepted",
        )

    def read(repo: DatasetRepo) -> list[dict[str, Any]]:
        repo.sync()
        return repo.log(max_count=limit)

    return ok(await the_node.datasets.run(dataset.name, master, read))
