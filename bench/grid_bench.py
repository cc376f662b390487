"""The run grid's query (``GET /runs/grid``, orchestrator/store/grid.py) against what the console would
do without it: one ``GET /runs?pipeline=X&limit=N`` per pipeline (``RunRecords.list``, the same
read the runs page makes), on the same database.

    .venv/bin/python bench/grid_bench.py [--pipelines 50] [--runs 200] [--steps 3] [--last 25]
        [--database-url postgresql+asyncpg://...] [--write]

Without ``--database-url`` a fresh SQLite file in a temp dir. Medians of 15 rounds, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import publish  # noqa: E402
from orchestrator.store import Store  # noqa: E402
from orchestrator.store.grid import run_grid  # noqa: E402
from orchestrator.store.runs import RunRecords  # noqa: E402
from orchestrator.store.tables import AttemptRow, PipelineRow, RunRow, RunStepRow  # noqa: E402


async def fill(store: Store, pipelines: int, runs: int, steps: int) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    pipeline_rows = [
        {"name": f"p{p:03d}", "steps": [{"name": f"s{s}"} for s in range(steps)]} for p in range(pipelines)
    ]
    run_rows, step_rows, attempt_rows = [], [], []
    for p in range(pipelines):
        for r in range(runs):
            run_id = f"p{p:03d}r{r:05d}"
            created = base + timedelta(minutes=r, seconds=p)
            run_rows.append(
                {"id": run_id, "pipeline": f"p{p:03d}", "trigger": "cron", "status": "succeeded" if r % 7 else "failed",
                 "created_at": created, "started_at": created + timedelta(seconds=1), "ended_at": created + timedelta(seconds=30)}
            )  # fmt: skip
            for s in range(steps):
                step_rows.append(
                    {"run_id": run_id, "position": s, "name": f"s{s}", "tool": "t", "output_dataset": "d", "branch": f"s{s}-x",
                     "status": "succeeded", "started_at": created, "ended_at": created + timedelta(seconds=9)}
                )  # fmt: skip
                attempt_rows.append(
                    {"run_id": run_id, "step": f"s{s}", "attempt": 1, "tool": "t", "status": "succeeded"}
                )
    async with store.session("fill") as s:
        await s.execute(insert(PipelineRow), pipeline_rows)
        await s.execute(insert(RunRow), run_rows)
        await s.execute(insert(RunStepRow), step_rows)
        await s.execute(insert(AttemptRow), attempt_rows)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--last", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--database-url")
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()
    url = (
        args.database_url
        or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='mao-grid-bench-')) / 'b.db'}"
    )
    store = Store(url)
    await store.start()
    try:
        await fill(store, args.pipelines, args.runs, args.steps)
        names = [f"p{p:03d}" for p in range(args.pipelines)]
        records = RunRecords(store)
        grid_times, per_pipeline_times, grid_cpu, per_pipeline_cpu = [], [], [], []
        for _ in range(args.rounds):
            started, cpu = time.perf_counter(), time.process_time()
            grid = await run_grid(store, args.last)
            grid_times.append(time.perf_counter() - started)
            grid_cpu.append(time.process_time() - cpu)
            started, cpu = time.perf_counter(), time.process_time()
            lists = [await records.list(pipeline=name, limit=args.last) for name in names]
            per_pipeline_times.append(time.perf_counter() - started)
            per_pipeline_cpu.append(time.process_time() - cpu)
        assert [len(row["runs"]) for row in grid["pipelines"]] == [len(runs) for runs in lists]
    finally:
        await store.close()
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} ms"

    load = os.getloadavg()[0]
    body = (
        f"{backend}, {args.pipelines} pipelines x {args.runs} runs x {args.steps} steps "
        f"({args.pipelines * args.runs} runs), last {args.last}: `run_grid` (one answer) "
        f"{ms(grid_times)} wall, {ms(grid_cpu)} CPU; one `RunRecords.list` per pipeline "
        f"{ms(per_pipeline_times)} wall, {ms(per_pipeline_cpu)} CPU ({args.pipelines} reads, without "
        f"the HTTP round trips the console would add); medians of {args.rounds} alternating rounds, "
        f"load average {load:.1f}."
    )
    publish(body, args.write, "Run grid", "bench/grid_bench.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    asyncio.run(main())
