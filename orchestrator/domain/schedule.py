"""A schedule of this instance as the store gives it: a cron schedule or a data trigger, and its ticks.

Both kinds are one row kind (``schedules``): a cron schedule has a cron expression, a time zone and a
catch-up policy; a data trigger (``dataset`` set, ``cron`` empty) fires at each ground-truth advance of
its dataset and has no catch-up. Defaults are applied here, once, for rows written before a policy
existed (``overlap`` ``skip``, ``catchup`` ``latest``, ``priority`` 0).

``public()`` is the JSON shape ``GET /schedules`` and ``POST /pipeline/run`` have always answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from .causes import Overlap

Catchup = Literal["none", "latest", "all"]


class ScheduleKind(StrEnum):
    CRON = "cron"  # fired by a clock (``scheduling.cron``)
    DATASET = "dataset"  # fired by a ground-truth advance (``scheduling.triggers``)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    pipeline: str
    cron: str  # "" for a data trigger
    timezone: str
    created_at: datetime
    last_tick_at: datetime | None
    overlap: Overlap = "skip"
    priority: int = 0
    catchup: Catchup = "latest"  # cron only
    catchup_window: int | None = None  # seconds; cron only
    dataset: str | None = None  # a data trigger's

    @property
    def kind(self) -> ScheduleKind:
        return ScheduleKind.DATASET if self.dataset else ScheduleKind.CRON

    @property
    def is_trigger(self) -> bool:
        return self.kind is ScheduleKind.DATASET

    def public(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self.id,
            "pipeline": self.pipeline,
            "cron": self.cron,
            "timezone": self.timezone,
            "created_at": _iso(self.created_at),
            "last_tick_at": _iso(self.last_tick_at),
            "overlap": self.overlap,
            "priority": self.priority,
        }
        if self.dataset:
            answer["trigger"] = {"dataset": self.dataset}
        else:
            answer.update(catchup=self.catchup, catchup_window=self.catchup_window)
        return answer


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    """The policies a schedule is written with. None is "not given": the row keeps none, and reading
    it applies the default (``Schedule``), so a later version's default reaches it too."""

    overlap: str | None = None
    catchup: str | None = None
    catchup_window: int | None = None  # seconds
    priority: int | None = None


DEFAULT_OPTIONS = ScheduleOptions()  # none given


@dataclass(frozen=True, slots=True)
class Tick:
    """What happened at one tick: ``fired`` (with its run), ``skipped`` or ``missed`` (and why)."""

    schedule_id: str
    pipeline: str
    due_at: datetime | None
    recorded_at: datetime | None
    outcome: str
    run_id: str | None
    reason: str | None

    def public(self) -> dict[str, Any]:
        return {
            "schedule_id": self.schedule_id,
            "pipeline": self.pipeline,
            "due_at": _iso(self.due_at),
            "recorded_at": _iso(self.recorded_at),
            "outcome": self.outcome,
            "run_id": self.run_id,
            "reason": self.reason,
        }
