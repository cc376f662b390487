"""A pipeline's versions: ``GET /pipeline/{name}/versions``, ``/versions/{n}`` and
``/versions/{n}/diff?against=m`` (``pipelines/versions.py``; what a version is: ``domain/versions.py``)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import Field

from ..domain.pipeline import Query
from ..domain.versions import Difference
from ..errors import BadRequest
from .common import ok, parse, path_name
from .facades import VERSIONS, facade
from .openapi import doc
from .schemas import Out

routes = web.RouteTableDef()

MAX_VERSION = 2**31 - 1
_NUMBER_RE = re.compile(r"^[1-9][0-9]{0,9}$")


class VersionsQuery(Query):
    limit: int = Field(default=50, ge=1, le=1000, description="at most this many, newest first")


class DiffQuery(Query):
    against: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="the version to compare with (default: the one before; for version 1, nothing)",
    )


class PipelineVersion(Out):
    pipeline: str
    version: int = Field(description="1, 2, ... per pipeline, never reused")
    hash: str = Field(description="SHA-256 of the canonical definition (defaults left out, keys sorted)")
    created_at: str
    created_by: str | None = Field(description="the API token's name if it has one, else the instance's")
    current: bool = Field(description="the version a run without 'version' takes now")
    steps: list[str]
    changes: str | None = Field(default=None, description="what changed from the version before")


class PipelineVersionDetail(PipelineVersion):
    definition: dict[str, Any] = Field(description="{name, description, steps, run_timeout}; no secret values")


class VersionDiff(Difference):
    pipeline: str
    version: int
    against: int | None = Field(description="null: compared with nothing (version 1's steps are all added)")
    hash: str
    against_hash: str | None
    summary: str = Field(description="one line: what changed")


def _number(request: web.Request, key: str = "n") -> int:
    value = request.match_info[key]
    if not _NUMBER_RE.fullmatch(value) or int(value) > MAX_VERSION:
        raise BadRequest(f"invalid version {value[:40]!r}: a number from 1", code="invalid_version")
    return int(value)


@routes.get("/pipeline/{name}/versions")
@doc(
    "A pipeline's versions, newest first, each with what changed from the one before",
    query=VersionsQuery,
    answer=list[PipelineVersion],
    errors=(400, 404, 503),
    tags=("pipelines",),
)
async def list_versions(request: web.Request) -> web.Response:
    """Every init that changed the pipeline recorded a version. A deleted pipeline's versions stay
    (its runs name them), none of them ``current``."""
    name = path_name(request, what="pipeline name")
    query = parse(VersionsQuery, dict(request.query))
    return ok(await facade(request, VERSIONS).pipelines.versions.list(name, query.limit))


@routes.get("/pipeline/{name}/versions/{n}")
@doc(
    "One version of a pipeline: its definition (no secret values)",
    answer=PipelineVersionDetail,
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def get_version(request: web.Request) -> web.Response:
    name = path_name(request, what="pipeline name")
    return ok(await facade(request, VERSIONS).pipelines.versions.get(name, _number(request)))


@routes.get("/pipeline/{name}/versions/{n}/diff")
@doc(
    "What changed between two versions of a pipeline: by step and field, and as a unified text diff",
    query=DiffQuery,
    answer=VersionDiff,
    errors=(400, 404, 409, 503),
    tags=("pipelines",),
)
async def diff_versions(request: web.Request) -> web.Response:
    """From version ``against`` (default: the one before) to version ``n``: the pipeline's own
    fields, then each step matched by name (``added``, ``removed``, ``changed`` with its fields;
    ``env.KEY`` for one variable), and ``unified`` (both definitions as indented JSON)."""
    name = path_name(request, what="pipeline name")
    number = _number(request)
    query = parse(DiffQuery, dict(request.query), codes={"against": "invalid_version"})
    return ok(await facade(request, VERSIONS).pipelines.versions.diff(name, number, query.against))
