"""What the schedule routes take and answer, for the OpenAPI document: ``POST /pipeline/run``'s answer to a
schedule, ``GET /schedules``, ``GET /federation/schedules`` and ``DELETE /jobs/{id}``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..domain.pipeline import Query
from .schemas import Out


class SchedulesQuery(Query):
    ticks: int = Field(default=20, ge=0, le=1000, description="recent ticks per schedule, newest first")
    next: int = Field(default=0, ge=0, le=20, description="upcoming ticks per cron schedule (next_ticks)")


class FederationSchedulesQuery(Query):
    next: int = Field(default=0, ge=0, le=20, description="upcoming ticks per cron schedule (next_ticks)")


class Scheduled(Out):
    pipeline: str
    job_id: str
    cron: str
    timezone: str
    scope: str
    placement: dict[str, Any] | None = None
    overlap: str | None = Field(default=None, description="skip, replace (instance scope) or allow")
    catchup: str | None = Field(default=None, description="none, latest or all")
    catchup_window: int | None = None
    priority: int | None = Field(
        default=None, description="the place of its runs in the winning instance's queue"
    )


class Tick(Out):
    due_at: str | None
    outcome: str = Field(description="fired, skipped (or claimed while undecided)")
    run_id: str | None
    reason: str | None


class Schedule(Out):
    id: str
    pipeline: str
    cron: str
    timezone: str
    overlap: str = Field(default="skip", description="skip, replace or queue")
    priority: int = Field(default=0, description="the priority of the runs it starts")
    created_at: str | None
    last_tick_at: str | None
    next_run_time: str | None
    next_ticks: list[str] | None = Field(default=None, description="with ?next=N: the next N ticks")
    ticks: list[Tick]


class FederationSchedule(Out):
    id: str
    pipeline: str
    cron: str
    timezone: str
    placement: dict[str, Any] | None
    priority: int = Field(default=0, description="the place of its runs in the winning instance's queue")
    created_by: str | None
    created_at: str | None
    next_run_time: str | None
    next_ticks: list[str] | None = Field(default=None, description="with ?next=N: the next N ticks")
    ticks: list[Tick]


class JobDeleted(Out):
    job_id: str
    deleted: bool
    scope: str
