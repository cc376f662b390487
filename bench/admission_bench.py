"""How quickly does the admission queue hand over, and what does a deep queue cost the API?

A node with ``MAO_MAX_ACTIVE_RUNS=1`` gets a backfill of ``--ticks`` runs of a one-step pipeline (the
step: ``true``): all are recorded ``queued`` in one transaction, then started one at a time. Measured:
- the backfill request itself (recording every run, 202);
- ``GET /queue`` while the queue is deep (its first call, with ``--ticks - 1`` runs waiting);
- the hand-over: from one run's ``ended_at`` to the next one's ``started_at`` (both from the run
  records), i.e. what admission adds between two runs (pipeline lookup, the steps written again,
  the task started).
With --write, appends the result to README.md.

    .venv/bin/python bench/admission_bench.py [--ticks 50] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

from harness import IMAGE, bench_node, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()

    with bench_node("bench-admission", orchestrator_env={"MAO_MAX_ACTIVE_RUNS": "1"}) as node:
        api = node.api
        api.tool("bench-tool", IMAGE)
        api.local_dataset("bench-out")
        step = {"name": "s", "tool": "bench-tool", "output_dataset": "bench-out", "cmd": ["true"]}
        api.ok(api.post("/pipeline/init", {"name": "bench-queue", "steps": [step]}))
        span = {
            "name": "bench-queue",
            "cron": "* * * * *",
            "from": "2026-01-01T00:00:00Z",
            "to": f"2026-01-01T00:{args.ticks - 1:02d}:00Z" if args.ticks <= 60 else "2026-01-01T23:59:00Z",
        }
        started = time.perf_counter()
        answer = api.ok(api.post("/pipeline/backfill", span))
        backfill_ms = (time.perf_counter() - started) * 1000
        run_ids = answer["runs"][: args.ticks]
        started = time.perf_counter()
        depth = len(api.ok(api.get("/queue")))
        queue_ms = (time.perf_counter() - started) * 1000
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = [api.ok(api.get(f"/runs/{r}")) for r in run_ids[-1:]]
            if runs[0]["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        runs = [api.ok(api.get(f"/runs/{r}")) for r in run_ids]
        assert all(r["status"] == "succeeded" for r in runs), [r["status"] for r in runs]
        gaps = [
            (datetime.fromisoformat(b["started_at"]) - datetime.fromisoformat(a["ended_at"])).total_seconds() * 1000
            for a, b in zip(runs, runs[1:], strict=False)
        ]
        ordered = sorted(gaps)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        table = "\n".join(
            [
                "| runs | backfill request ms | GET /queue ms (depth) | hand-over median ms | p90 ms | max ms |",
                "|---|---|---|---|---|---|",
                f"| {len(runs)} | {backfill_ms:.0f} | {queue_ms:.1f} ({depth}) | {statistics.median(gaps):.1f} "
                f"| {p90:.1f} | {max(gaps):.1f} |",
            ]
        )
        print(table)
        if args.write:
            record("Admission queue", f".venv/bin/python bench/admission_bench.py --ticks {args.ticks} --write", table)


if __name__ == "__main__":
    main()
