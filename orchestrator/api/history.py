"""``GET /registry/datasets/{name}/history``: a dataset's ``ground-truth`` history as this instance
sees it (fetched from the master first), each commit with its provenance trailers (``MAO-Run``,
``MAO-Step``, ``MAO-Input-Commit`` ...), for the console and for operators."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from ..datasets.repo import DatasetRepo
from ..domain.pipeline import Query
from ..errors import NotFound
from .common import node, ok, parse, path_name
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
    errors=(400, 404, 503),
    tags=("registry",),
)
async def dataset_history(request: web.Request) -> web.Response:
    name = path_name(request, what="dataset name")
    limit = parse(HistoryQuery, dict(request.query)).limit
    the_node = node(request)
    dataset = await the_node.registry.dataset(name)
    if dataset is None:
        raise NotFound(f"dataset {name!r} is not registered")

    def read(repo: DatasetRepo) -> list[dict[str, Any]]:
        repo.sync()
        return repo.log(max_count=limit)

    return ok(await the_node.datasets.run(dataset.name, dataset.master, read))
