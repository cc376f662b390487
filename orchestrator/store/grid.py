"""The run grid (``GET /runs/grid``): each pipeline's last N runs with their steps' states, in three
queries whatever the number of pipelines.

A window function numbers each pipeline's runs newest first (``row_number() OVER (PARTITION BY
pipeline ...)``, SQLite 3.25+ and PostgreSQL alike); steps and attempt counts are joined to that
numbering rather than fetched with ``IN (ids)`` lists, which SQLite caps at a few thousand values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from . import Store
from .tables import AttemptRow, PipelineRow, RunRow, RunStepRow


class GridStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    status: str
    attempts: int = Field(description="attempt records (a fan-out step's shard attempts included)")
    retried: bool = Field(
        description="it needed more than a first attempt (a retry, a retried shard, its fallback)"
    )
    duration: float | None


class GridRun(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    status: str
    trigger: str
    priority: int
    created_at: str
    started_at: str | None
    ended_at: str | None
    tick_at: str | None
    duration: float | None = Field(description="seconds from start to end (None until both exist)")
    queued: float | None = Field(description="seconds from creation to start (None until it started)")
    steps: list[GridStep] = Field(description="in the run's own step order")


class GridRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    pipeline: str
    defined: bool = Field(description="the pipeline is initialised on this instance now")
    steps: list[str] = Field(
        description="step names for the rows of a cell: the definition's order, then steps only older runs had"
    )
    runs: list[GridRun] = Field(description="newest first")


class RunGrid(BaseModel):
    model_config = ConfigDict(frozen=True)

    last: int
    pipelines: list[GridRow]


async def run_grid(
    store: Store,
    last: int,
    pipelines: Sequence[str] | None = None,
    status: str | None = None,
    trigger: str | None = None,
) -> RunGrid:
    """Each pipeline's ``last`` newest runs (those with ``status`` / ``trigger`` when given). Rows:
    ``pipelines`` when given (a name without runs or definition is an empty row: it is a filter, not
    a lookup), else every pipeline defined here or with runs here, by name."""
    number = func.row_number().over(
        partition_by=RunRow.pipeline, order_by=(RunRow.created_at.desc(), RunRow.id)
    )
    numbered = select(RunRow, number.label("n"))
    if pipelines is not None:
        numbered = numbered.where(RunRow.pipeline.in_(list(pipelines)))
    if status:
        numbered = numbered.where(RunRow.status == status)
    if trigger:
        numbered = numbered.where(RunRow.trigger == trigger)
    ranked = numbered.subquery("ranked")
    run = aliased(RunRow, ranked)
    kept = ranked.c.n <= last
    async with store.session("read the run grid") as s:
        runs = (
            await s.scalars(select(run).where(kept).order_by(run.pipeline, run.created_at.desc(), run.id))
        ).all()
        steps = (
            await s.execute(
                select(
                    RunStepRow.run_id,
                    RunStepRow.name,
                    RunStepRow.status,
                    RunStepRow.started_at,
                    RunStepRow.ended_at,
                )
                .join(ranked, ranked.c.id == RunStepRow.run_id)
                .where(kept)
                .order_by(RunStepRow.run_id, RunStepRow.position)
            )
        ).all()
        counts = (
            await s.execute(
                select(AttemptRow.run_id, AttemptRow.step, func.count(), func.max(AttemptRow.attempt))
                .join(ranked, ranked.c.id == AttemptRow.run_id)
                .where(kept)
                .group_by(AttemptRow.run_id, AttemptRow.step)
            )
        ).all()
        definitions = select(PipelineRow.name, PipelineRow.steps)
        if pipelines is not None:
            definitions = definitions.where(PipelineRow.name.in_(list(pipelines)))
        defined = {name: _step_names(spec) for name, spec in (await s.execute(definitions)).all()}

    tries = {(run_id, step): (int(n), int(highest or 0)) for run_id, step, n, highest in counts}
    by_run: dict[str, list[GridStep]] = {}
    for run_id, name, step_status, started, ended in steps:
        by_run.setdefault(run_id, []).append(
            GridStep(
                name=name,
                status=step_status,
                attempts=tries.get((run_id, name), (0, 0))[0],
                retried=tries.get((run_id, name), (0, 0))[1] > 1,
                duration=_seconds(started, ended),
            )
        )
    by_pipeline: dict[str, list[GridRun]] = {}
    for r in runs:
        by_pipeline.setdefault(r.pipeline, []).append(
            GridRun(
                id=r.id,
                status=r.status,
                trigger=r.trigger,
                priority=r.priority or 0,
                created_at=r.created_at.isoformat(),
                started_at=_iso(r.started_at),
                ended_at=_iso(r.ended_at),
                tick_at=_iso(r.tick_at),
                duration=_seconds(r.started_at, r.ended_at),
                queued=_seconds(r.created_at, r.started_at),
                steps=by_run.get(r.id, []),
            )
        )
    names = list(dict.fromkeys(pipelines)) if pipelines is not None else sorted({*defined, *by_pipeline})
    rows = []
    for name in names:
        row_runs = by_pipeline.get(name, [])
        order = list(defined.get(name, []))
        for grid_run in row_runs:
            order += [st.name for st in grid_run.steps if st.name not in order]
        rows.append(GridRow(pipeline=name, defined=name in defined, steps=order, runs=row_runs))
    return RunGrid(last=last, pipelines=rows)


def _step_names(spec: Any) -> list[str]:
    # The stored public steps (a list of objects with a name); anything else reads as no steps.
    if not isinstance(spec, list):
        return []
    return [
        str(step["name"]) for step in spec if isinstance(step, dict) and isinstance(step.get("name"), str)
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None
