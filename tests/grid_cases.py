"""Generated run histories for the run grid (``orchestrator/store/grid.py``): each case is written to a
database and ``run_grid`` is compared with the same answer computed naively in Python. Used on
SQLite (tests/unit/test_run_grid.py) and PostgreSQL (tests/integration/test_console_routes.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st
from sqlalchemy import delete

from orchestrator.domain.states import RunStatus, StepStatus
from orchestrator.store import Store
from orchestrator.store.grid import run_grid
from orchestrator.store.tables import AttemptRow, PipelineRow, RunRow, RunStepRow

PIPELINES = ("a", "b", "c")
TRIGGERS = ("manual", "cron", "backfill")
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CaseRun:
    id: str
    pipeline: str
    status: str
    trigger: str
    created: int  # seconds after BASE: equal values test the tie-break by id
    started: int | None
    steps: tuple[tuple[str, int], ...]  # (status, attempts) of steps s0, s1, ...: attempts 1..n


@dataclass(frozen=True)
class Case:
    runs: tuple[CaseRun, ...]
    defined: tuple[str, ...]
    last: int
    pipelines: tuple[str, ...] | None
    status: str | None
    trigger: str | None


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(0, 14))
    runs = []
    for i in range(count):
        created = draw(st.integers(0, 5))
        runs.append(
            CaseRun(
                id=f"r{i:02d}",
                pipeline=draw(st.sampled_from(PIPELINES)),
                status=draw(st.sampled_from([s.value for s in RunStatus])),
                trigger=draw(st.sampled_from(TRIGGERS)),
                created=created,
                started=draw(st.one_of(st.none(), st.integers(created, created + 3))),
                steps=tuple(
                    draw(
                        st.lists(
                            st.tuples(st.sampled_from([s.value for s in StepStatus]), st.integers(0, 2)),
                            max_size=3,
                        )
                    )
                ),
            )
        )
    return Case(
        runs=tuple(runs),
        defined=tuple(draw(st.lists(st.sampled_from((*PIPELINES, "d")), unique=True, max_size=2))),
        last=draw(st.integers(1, 4)),
        pipelines=draw(
            st.one_of(
                st.none(),
                st.lists(st.sampled_from((*PIPELINES, "d")), min_size=1, max_size=3, unique=True).map(tuple),
            )
        ),
        status=draw(st.one_of(st.none(), st.sampled_from([s.value for s in RunStatus]))),
        trigger=draw(st.one_of(st.none(), st.sampled_from(TRIGGERS))),
    )


def at(seconds: int | None) -> datetime | None:
    return None if seconds is None else BASE + timedelta(seconds=seconds)


async def write(store: Store, case: Case) -> None:
    async with store.session("reset the grid case") as s:
        for table in (AttemptRow, RunStepRow, RunRow, PipelineRow):
            await s.execute(delete(table))
    async with store.session("write the grid case") as s:
        for name in case.defined:
            s.add(PipelineRow(name=name, steps=[{"name": "s1"}, {"name": "defined-only"}]))
        for r in case.runs:
            s.add(
                RunRow(
                    id=r.id,
                    pipeline=r.pipeline,
                    trigger=r.trigger,
                    status=r.status,
                    created_at=at(r.created),
                    started_at=at(r.started),
                    ended_at=at(r.started + 2) if r.started is not None else None,
                )
            )
        await s.flush()
        for r in case.runs:
            for position, (status, attempts) in enumerate(r.steps):
                name = f"s{position}"
                s.add(
                    RunStepRow(
                        run_id=r.id,
                        position=position,
                        name=name,
                        tool="t",
                        output_dataset="d",
                        branch=f"{name}-x",
                        status=status,
                        started_at=at(r.started),
                        ended_at=at(r.started + 1) if r.started is not None else None,
                    )
                )
                for number in range(1, attempts + 1):
                    s.add(AttemptRow(run_id=r.id, step=name, attempt=number, tool="t", status="failed"))


def expected(case: Case) -> list[tuple[str, bool, list[str], list[str]]]:
    """(pipeline, defined, step names, run ids newest first) per row, computed naively."""
    matching = [
        r
        for r in case.runs
        if (case.status is None or r.status == case.status)
        and (case.trigger is None or r.trigger == case.trigger)
    ]
    if case.pipelines is not None:
        names = list(case.pipelines)
    else:
        names = sorted(set(case.defined) | {r.pipeline for r in matching})
    rows = []
    for name in names:
        mine = sorted((r for r in matching if r.pipeline == name), key=lambda r: (-r.created, r.id))[
            : case.last
        ]
        steps = ["s1", "defined-only"] if name in case.defined else []
        for r in mine:
            steps += [f"s{i}" for i in range(len(r.steps)) if f"s{i}" not in steps]
        rows.append((name, name in case.defined, steps, [r.id for r in mine]))
    return rows


async def check(store: Store, case: Case) -> None:
    await write(store, case)
    grid = await run_grid(store, case.last, case.pipelines, status=case.status, trigger=case.trigger)
    got = [
        (row["pipeline"], row["defined"], row["steps"], [r["id"] for r in row["runs"]])
        for row in grid["pipelines"]
    ]
    assert got == expected(case), (got, expected(case))
    by_id = {r.id: r for r in case.runs}
    for row in grid["pipelines"]:
        for run in row["runs"]:
            source = by_id[run["id"]]
            assert [(s["name"], s["status"], s["attempts"], s["retried"]) for s in run["steps"]] == [
                (f"s{i}", status, attempts, attempts > 1) for i, (status, attempts) in enumerate(source.steps)
            ]
            assert run["queued"] == (
                None if source.started is None else float(source.started - source.created)
            )
            assert run["duration"] == (None if source.started is None else 2.0)
            assert (run["status"], run["trigger"]) == (source.status, source.trigger)


class GridChecker:
    """One store on one event loop for every generated case (a store per case would spend most of
    the time on starting engines and checking migrations)."""

    def __init__(self, url: str) -> None:
        self.runner = asyncio.Runner()
        self.store = Store(url)
        self.runner.run(self.store.start())

    def check(self, case: Case) -> None:
        self.runner.run(check(self.store, case))

    def close(self) -> None:
        self.runner.run(self.store.close())
        self.runner.close()
