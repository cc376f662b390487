"""Backfills as objects: ``GET /backfills``, ``GET /backfills/{id}``, ``POST /backfills/{id}/cancel``.
A backfill is started by ``POST /pipeline/backfill`` (``api/pipelines.py``); ``scheduling/backfill.py``
holds the rules."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, StrictBool, field_validator

from ..domain.pipeline import Name, Query, Request
from .common import ok, parse, path_id, read_json
from .facades import BACKFILLS, facade
from .openapi import doc
from .schemas import Out

routes = web.RouteTableDef()


class BackfillsQuery(Query):
    pipeline: Name | None = None
    active: bool | None = Field(
        default=None, description="true: only backfills with runs queued or going; false: only ended ones"
    )
    limit: int = Field(default=50, ge=1, le=1000, description="at most this many, newest first")

    @field_validator("pipeline", "active", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class BackfillCancel(Request):
    running: StrictBool = Field(
        default=False, description="also stop the backfill's running run (as POST /runs/{id}/cancel)"
    )


class Progress(Out):
    total: int = Field(description="the backfill's ticks (one run each)")
    done: int = Field(description="runs that succeeded")
    failed: int
    cancelled: int
    queued: int = Field(description="runs waiting for their turn")
    running: int = Field(description="runs started and not ended")
    ended: int = Field(description="done + failed + cancelled")


class Backfill(Out):
    id: str
    pipeline: str
    cron: str
    timezone: str
    from_: str = Field(alias="from")
    to: str
    count: int = Field(description="ticks in the span")
    priority: int
    version: int | None = Field(description="the pipeline version its runs take; null: each the current one")
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: Progress
    created_at: str
    created_by: str | None
    cancelled_at: str | None
    cancelled_running: bool | None


class BackfillTick(Out):
    tick_at: str | None
    run_id: str
    status: str
    version: int | None
    started_at: str | None
    ended_at: str | None
    error: str | None


class BackfillDetail(Backfill):
    ticks: list[BackfillTick] = Field(description="in tick order")


class BackfillCancelled(BackfillDetail):
    cancelled_runs: list[str] = Field(description="the queued runs this cancel ended, in tick order")
    stopping_runs: list[str] = Field(description='with {"running": true}: the runs being stopped')


class BackfillStarted(Out):
    pipeline: str
    cron: str
    timezone: str
    ticks: list[str]
    count: int
    dry_run: bool
    backfill_id: str | None = Field(
        default=None, description="the backfill's id (GET /backfills/{id}); absent for a dry run or no tick"
    )
    runs: list[str] | None = Field(default=None, description="its runs' ids, in tick order")
    status: str | None = None
    version: int | None = None


@routes.get("/backfills")
@doc(
    "This instance's backfills, newest first, with their progress",
    query=BackfillsQuery,
    answer=list[Backfill],
    tags=("runs",),
)
async def list_backfills(request: web.Request) -> web.Response:
    query = parse(BackfillsQuery, dict(request.query), codes={"pipeline": "invalid_name"})
    backfills = await facade(request, BACKFILLS).backfills.list(query.pipeline, query.limit, query.active)
    return ok([backfill.to_json() for backfill in backfills])


@routes.get("/backfills/{id}")
@doc(
    "One backfill: its progress and its ticks with their runs, in tick order",
    answer=BackfillDetail,
    errors=(400, 404, 503),
    tags=("runs",),
)
async def get_backfill(request: web.Request) -> web.Response:
    return ok((await facade(request, BACKFILLS).backfills.get(path_id(request))).to_json())


@routes.post("/backfills/{id}/cancel")
@doc(
    "Cancel a backfill: its queued runs end cancelled at once; its running run too with {running: true}",
    body=BackfillCancel,
    body_required=False,
    answer=BackfillCancelled,
    errors=(400, 404, 409, 503),
    tags=("runs",),
)
async def cancel_backfill(request: web.Request) -> web.Response:
    """The queued runs end ``cancelled`` in one transaction, without starting (also across a
    restart: they are rows); the running one goes on unless ``{"running": true}``, which stops it as
    ``POST /runs/{id}/cancel`` does. 409 ``backfill_ended`` when nothing is left to cancel."""
    backfill_id = path_id(request)
    body = parse(BackfillCancel, await read_json(request, optional=True))
    return ok(await facade(request, BACKFILLS).backfills.cancel(backfill_id, body.running))
