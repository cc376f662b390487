"""How long does a fully cached re-run take?

A 5-step straight-line pipeline with ``cache: true`` on every step runs once for real (containers,
commits, merges); then the same pipeline is re-run ``--runs`` times with nothing changed, so every
step is ``cached`` (no container, no commit). Prints the end-to-end time of ``POST /pipeline/run``
(wait: true) per re-run and per step; target <= 50 ms per step. With --write, appends to README.md.

    .venv/bin/python bench/cached_rerun.py [--runs 20] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import IMAGE, bench_node, record

STEPS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()

    with bench_node("bench-cache") as node:
        api = node.api
        api.tool("bench-tool", IMAGE)
        api.local_dataset("bench-raw")
        api.local_dataset("bench-out")
        steps = [
            {
                "name": f"s{i}",
                "tool": "bench-tool",
                "input_dataset": "bench-raw",
                "output_dataset": "bench-out",
                "cmd": ["sh", "-c", f"ls /usr/src/app/input > /usr/src/app/data/s{i}.txt"],
                "cache": True,
            }
            for i in range(STEPS)
        ]
        api.ok(api.post("/pipeline/init", {"name": "bench-cache", "steps": steps}))
        first = api.ok(api.post("/pipeline/run", {"name": "bench-cache"}))
        assert first["status"] == "succeeded", first
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            run = api.ok(api.post("/pipeline/run", {"name": "bench-cache"}))
            times.append(time.perf_counter() - started)
            assert [s["status"] for s in run["steps"]] == ["cached"] * STEPS, run
        ordered = sorted(times)
        median = statistics.median(times)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        per_step = median / STEPS * 1000
        verdict = "within" if per_step <= 50 else "OVER"
        table = "\n".join(
            [
                "| | runs | median ms | p90 ms | min ms | median ms per step |",
                "|---|---|---|---|---|---|",
                f"| cached re-run of {STEPS} steps | {len(times)} | {median * 1000:.0f} | {p90 * 1000:.0f} "
                f"| {min(times) * 1000:.0f} | {per_step:.1f} |",
            ]
        )
        print(table)
        print(f"\n{per_step:.1f} ms per step ({verdict} the 50 ms target)")
    if args.write:
        record(
            "Cached re-run",
            f".venv/bin/python bench/cached_rerun.py --runs {args.runs} --write",
            f"{table}\n\n**{per_step:.1f} ms per step** ({verdict} the 50 ms target).",
        )


if __name__ == "__main__":
    main()
