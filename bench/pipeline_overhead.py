"""How much does orchestration add to one pipeline step?

Runs, alternately and in one process so both see the same machine:
  api   - POST /pipeline/run on a real orchestrator (SQLite, etcd, executor, Docker, a bare git remote),
          single step: the tool appends a line to a file in its output dataset;
  hand  - the same work by hand in this script: `docker run --rm` of the same image and command on a
          clone's work tree, `git add` + `git commit`, `git push` of the node branch, then a --no-ff
          merge into ground-truth and its push.
Prints the medians and their ratio, and with --write appends the result to bench/README.md.

    .venv/bin/python bench/pipeline_overhead.py [--runs 30] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

from harness import IMAGE, bench_node, record

from tests.api import Api

SCRIPT = "date +%s%N >> /usr/src/app/data/samples.txt"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def by_hand_setup(tmp: Path) -> Path:
    remote = tmp / "hand-remote.git"
    git(tmp, "init", "-q", "--bare", "-b", "ground-truth", str(remote))
    clone = tmp / "hand-clone"
    git(tmp, "clone", "-q", str(remote), str(clone))
    git(clone, "config", "user.name", "bench")
    git(clone, "config", "user.email", "bench@localhost")
    git(clone, "commit", "-q", "--allow-empty", "-m", "Initialise ground-truth")
    git(clone, "push", "-q", "origin", "HEAD:refs/heads/ground-truth")
    git(clone, "checkout", "-q", "-b", "step-hand")
    return clone


def by_hand_step(clone: Path, n: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "-v", f"{clone}:/usr/src/app/data", IMAGE, "sh", "-c", SCRIPT],
        check=True,
        capture_output=True,
    )
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", f"output of run {n}")
    git(clone, "push", "-q", "origin", "step-hand")
    git(clone, "checkout", "-q", "ground-truth")
    git(clone, "merge", "-q", "--no-ff", "-m", f"Merge step-hand (run {n})", "step-hand")
    git(clone, "push", "-q", "origin", "ground-truth")
    git(clone, "checkout", "-q", "step-hand")
    return time.perf_counter() - started


def api_setup(api: Api) -> None:
    api.tool("bench-tool", IMAGE)
    api.local_dataset("bench-data")
    step = {"name": "step", "tool": "bench-tool", "output_dataset": "bench-data", "cmd": ["sh", "-c", SCRIPT]}
    api.ok(api.post("/pipeline/init", {"name": "bench", "steps": [step]}))


def api_step(api: Api) -> float:
    started = time.perf_counter()
    run = api.ok(api.post("/pipeline/run", {"name": "bench"}))
    elapsed = time.perf_counter() - started
    assert run["status"] == "succeeded", run
    return elapsed


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"| {label} | {len(samples)} | {statistics.median(samples) * 1000:.0f} | {p90 * 1000:.0f} | {min(samples) * 1000:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()

    with bench_node("bench") as node:
        api, tmp = node.api, node.tmp
        api_setup(api)
        clone = by_hand_setup(tmp)

        for n in range(args.warmup):
            api_step(api)
            by_hand_step(clone, -n)
        api_times, hand_times = [], []
        for n in range(args.runs):  # alternate, so drift and noise hit both alike
            api_times.append(api_step(api))
            hand_times.append(by_hand_step(clone, n))

        ratio = statistics.median(api_times) / statistics.median(hand_times)
        table = "\n".join(
            [
                "| | runs | median ms | p90 ms | min ms |",
                "|---|---|---|---|---|",
                summary("orchestrated (POST /pipeline/run)", api_times),
                summary("by hand (docker run --rm + git commit/push/merge/push)", hand_times),
            ]
        )
        verdict = "within" if ratio <= 1.30 else "OVER"
        print(table)
        print(f"\nratio of medians: {ratio:.2f} ({verdict} the 1.30 target)")
    if args.write:
        record(
            "",
            f".venv/bin/python bench/pipeline_overhead.py --runs {args.runs} --write",
            f"{table}\n\nRatio of medians: **{ratio:.2f}** ({verdict} the 1.30 target).",
        )


if __name__ == "__main__":
    main()
