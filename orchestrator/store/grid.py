"""The run grid (``GET /runs/grid``): each pipeline's last N runs with their steps' states, in one
answer, from a handful of queries whatever the number of pipelines.

A window function numbers each pipeline's runs newest first (``row_number() OVER (PARTITION BY
pipeline ...)``, SQLite 3.25+ and PostgreSQL alike) over the three columns it needs; the kept runs,
their steps and attempt counts are then read by id, in chunks well inside both databases' limits on
bound parameters.

The answer is typed dicts rather than models: up to 10,000 runs (100 pipelines x 100) with their steps
go out at once, and validating each on the way out cost three times the queries
(bench/grid_bench.py). pydantic still describes them for the OpenAPI document (``TypeAdapter``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import func, select
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from . import Store
from .tables import AttemptRow, PipelineRow, RunRow, RunStepRow


class GridStep(TypedDict):
    name: str
    status: str
    attempts: Annotated[int, Field(description="attempt records (a fan-out step's shard attempts included)")]
    retried: Annotated[
        bool,
        Field(description="it needed more than a first attempt (a retry, a retried shard, its fallback)"),
    ]
    duration: float | None


class GridRun(TypedDict):
    id: str
    status: str
    trigger: str
    priority: int
    created_at: str
    started_at: str | None
    ended_at: str | None
    tick_at: str | None
    version: Annotated[int | None, Field(description="the pipeline version it ran with")]
    retry_of: Annotated[str | None, Field(description="the run it retries (POST /runs/{id}/retry)")]
    duration: Annotated[float | None, Field(description="seconds from start to end (None until both exist)")]
    queued: Annotated[
        float | None, Field(description="seconds from creation to start (None until it started)")
    ]
    steps: Annotated[list[GridStep], Field(description="in the run's own step order")]


class GridRow(TypedDict):
    pipeline: str
    defined: Annotated[bool, Field(description="the pipeline is initialised on this instance now")]
    steps: Annotated[
        list[str],
        Field(
            description="step names for a cell's squares: the definition's order, then steps only older runs had"
        ),
    ]
    runs: Annotated[list[GridRun], Field(description="newest first")]


class RunGrid(TypedDict):
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
    # The window runs over the three columns it needs only; the kept runs' rows, steps and attempt
    # counts are then read by id (bench/grid_bench.py: a third of the time of windowing whole rows).
    number = func.row_number().over(
        partition_by=RunRow.pipeline, order_by=(RunRow.created_at.desc(), RunRow.id)
    )
    numbered = select(RunRow.id, number.label("n"))
    if pipelines is not None:
        numbered = numbered.where(RunRow.pipeline.in_(list(pipelines)))
    if status:
        numbered = numbered.where(RunRow.status == status)
    if trigger:
        numbered = numbered.where(RunRow.trigger == trigger)
    ranked = numbered.subquery("ranked")
    async with store.session("read the run grid") as s:
        ids = list((await s.scalars(select(ranked.c.id).where(ranked.c.n <= last))).all())
        chunks = _chunks(ids)
        run_parts = [
            (
                await s.execute(
                    select(
                        RunRow.id,
                        RunRow.pipeline,
                        RunRow.status,
                        RunRow.trigger,
                        RunRow.priority,
                        RunRow.created_at,
                        RunRow.started_at,
                        RunRow.ended_at,
                        RunRow.tick_at,
                        RunRow.version,
                        RunRow.retry_of,
                    ).where(RunRow.id.in_(chunk))
                )
            )
            .tuples()
            .all()
            for chunk in chunks
        ]
        step_parts = [
            (
                await s.execute(
                    select(
                        RunStepRow.run_id,
                        RunStepRow.name,
                        RunStepRow.status,
                        RunStepRow.started_at,
                        RunStepRow.ended_at,
                    )
                    .where(RunStepRow.run_id.in_(chunk))
                    .order_by(RunStepRow.run_id, RunStepRow.position)
                )
            )
            .tuples()
            .all()
            for chunk in chunks
        ]
        count_parts = [
            (
                await s.execute(
                    select(AttemptRow.run_id, AttemptRow.step, func.count(), func.max(AttemptRow.attempt))
                    .where(AttemptRow.run_id.in_(chunk))
                    .group_by(AttemptRow.run_id, AttemptRow.step)
                )
            )
            .tuples()
            .all()
            for chunk in chunks
        ]
        definitions = select(PipelineRow.name, PipelineRow.steps)
        if pipelines is not None:
            definitions = definitions.where(PipelineRow.name.in_(list(pipelines)))
        defined = {name: _step_names(spec) for name, spec in (await s.execute(definitions)).all()}

    # Up to 10,000 runs with their steps: put together off the event loop.
    return await asyncio.to_thread(
        _assemble,
        last,
        pipelines,
        defined,
        [row for part in run_parts for row in part],
        [row for part in step_parts for row in part],
        [row for part in count_parts for row in part],
    )


def _assemble(
    last: int,
    pipelines: Sequence[str] | None,
    defined: dict[str, list[str]],
    run_rows: Sequence[
        tuple[
            str, str, str, str, int | None, datetime, datetime | None, datetime | None, datetime | None,
            int | None, str | None,
        ]
    ],
    step_rows: Sequence[tuple[str, str, str, datetime | None, datetime | None]],
    count_rows: Sequence[tuple[str, str, int, int]],
) -> RunGrid:
    tries = {(run_id, step): (int(n), int(highest or 0)) for run_id, step, n, highest in count_rows}
    by_run: dict[str, list[GridStep]] = {}
    for run_id, name, step_status, started, ended in step_rows:
        attempts, highest = tries.get((run_id, name), (0, 0))
        by_run.setdefault(run_id, []).append(
            {
                "name": name,
                "status": step_status,
                "attempts": attempts,
                "retried": highest > 1,
                "duration": _seconds(started, ended),
            }
        )
    by_pipeline: dict[str, list[GridRun]] = {}
    # Newest first, ties by id as the window numbered them (a reversed sort keeps equal keys in order).
    runs = sorted(
        sorted(run_rows, key=lambda r: r[0]),
        key=lambda r: r[5],
        reverse=True,
    )
    for run_id, pipeline, run_status, run_trigger, priority, created, started, ended, tick, version, retry_of in runs:
        by_pipeline.setdefault(pipeline, []).append(
            {
                "id": run_id,
                "status": run_status,
                "trigger": run_trigger,
                "priority": priority or 0,
                "created_at": created.isoformat(),
                "started_at": _iso(started),
                "ended_at": _iso(ended),
                "tick_at": _iso(tick),
                "version": version,
                "retry_of": retry_of,
                "duration": _seconds(started, ended),
                "queued": _seconds(created, started),
                "steps": by_run.get(run_id, []),
            }
        )
    names = list(dict.fromkeys(pipelines)) if pipelines is not None else sorted({*defined, *by_pipeline})
    rows: list[GridRow] = []
    for name in names:
        row_runs = by_pipeline.get(name, [])
        order = list(defined.get(name, []))
        for grid_run in row_runs:
            order += [st["name"] for st in grid_run["steps"] if st["name"] not in order]
        rows.append({"pipeline": name, "defined": name in defined, "steps": order, "runs": row_runs})
    return {"last": last, "pipelines": rows}


# Ids per IN list: well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 1000


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


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
