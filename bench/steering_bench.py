"""What pipeline versions and backfill objects cost (issue 21), on the database itself (no HTTP):

- an init that records a version (and one that records none) against the store's ``save_pipeline``;
- ``GET /pipeline/{name}/versions`` (each listed version diffed against the one before) and one diff;
- recording a backfill of ``--ticks`` runs with its row; ``GET /backfills`` over ``--backfills`` of
  them (progress counted from the runs); ``GET /backfills/{id}`` (every tick); cancelling the queued
  two thirds of one in one transaction.

    .venv/bin/python bench/steering_bench.py [--steps 10] [--versions 100] [--backfills 50]
        [--ticks 1000] [--database-url postgresql+asyncpg://...] [--write]

Without ``--database-url`` a fresh SQLite file in a temp dir. Medians of ``--rounds`` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import publish  # noqa: E402
from orchestrator.domain.pipeline import Pipeline  # noqa: E402
from orchestrator.domain.states import RunStatus  # noqa: E402
from orchestrator.pipelines.versions import VersionHistory  # noqa: E402
from orchestrator.store import Store  # noqa: E402
from orchestrator.store.backfills import BackfillRecords, NewBackfill  # noqa: E402
from orchestrator.store.runs import NewRun, RunRecords  # noqa: E402


def definition(steps: int, version: int) -> Pipeline:
    return Pipeline.model_validate(
        {
            "name": "bench",
            "steps": [
                {"name": f"s{i}", "tool": "t", "output_dataset": "o", "cmd": ["sh", "-c", f"echo {version}"]}
                for i in range(steps)
            ],
        }
    )


async def timed(rounds: int, call) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--backfills", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--database-url")
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()
    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='mao-steer-')) / 'b.db'}"
    store = Store(url)
    await store.start()

    async def nothing() -> None:
        return None

    try:
        inits = []
        for version in range(args.versions):
            started = time.perf_counter()
            await store.save_pipeline(definition(args.steps, version), nothing, by="bench")
            inits.append(time.perf_counter() - started)
        latest = definition(args.steps, args.versions - 1)
        unchanged = await timed(args.rounds, lambda: store.save_pipeline(latest, nothing, by="bench"))
        history = VersionHistory(store)
        listing = await timed(args.rounds, lambda: history.list("bench", 50))
        diff = await timed(args.rounds, lambda: history.diff("bench", args.versions, 1))

        records, backfills = RunRecords(store), BackfillRecords(store)
        nodes = latest.graph()
        branches = [f"{s.name}-bench" for s in latest.steps]
        base = datetime(2026, 1, 1, tzinfo=UTC)
        recorded = []
        for _ in range(args.backfills):
            backfill = NewBackfill(uuid.uuid4().hex, "bench", "0 * * * *", "UTC", base, base, args.ticks, 0, None, "bench")
            runs = [
                NewRun(
                    uuid.uuid4().hex, latest, "backfill", nodes, branches,
                    RunStatus.QUEUED if i % 3 else RunStatus.SUCCEEDED, 0, base + timedelta(microseconds=i),
                    None, {"tick_at": base + timedelta(hours=i), "backfill_id": backfill.id},
                )  # fmt: skip
                for i in range(args.ticks)
            ]
            started = time.perf_counter()
            await records.create_many(runs, backfill)
            recorded.append(time.perf_counter() - started)
        listed = await timed(args.rounds, lambda: backfills.recent(limit=50))
        one = await timed(args.rounds, lambda: backfills.get(backfill.id))
        queued = await backfills.run_ids(backfill.id, (RunStatus.QUEUED,))
        started = time.perf_counter()
        cancelled = await backfills.cancel(backfill.id, queued, False, "bench")
        cancel = (time.perf_counter() - started) * 1000
    finally:
        await store.close()
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    body = (
        f"{backend}, pipelines of {args.steps} steps: an init recording a version "
        f"{statistics.median(inits) * 1000:.1f} ms (median of {args.versions}), one recording none "
        f"{unchanged:.1f} ms; `GET /pipeline/{{name}}/versions` (50 of {args.versions}, each diffed) "
        f"{listing:.0f} ms; one diff (version {args.versions} against 1) {diff:.1f} ms. Backfills of "
        f"{args.ticks} ticks: recording one with its runs {statistics.median(recorded) * 1000:.0f} ms; "
        f"`GET /backfills` over {args.backfills} of them ({args.backfills * args.ticks} runs) {listed:.0f} ms; "
        f"`GET /backfills/{{id}}` {one:.0f} ms; cancelling {len(cancelled)} queued runs in one "
        f"transaction {cancel:.0f} ms. Medians of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}."
    )
    publish(body, args.write, "Versions and backfills", "bench/steering_bench.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    asyncio.run(main())
