"""How much does orchestration add to one pipeline step?

Runs, alternately and in one process so both see the same machine:
  api   - POST /pipeline/run on a real orchestrator (SQLite, etcd, executor, Docker, a bare git remote),
          single step: the tool appends a line to a file in its output dataset;
  hand  - the same work by hand in this script: `docker run --rm` of the same image and command on a
          clone's work tree, `git add` + `git commit`, `git push` of the node branch, then a --no-ff
          merge into ground-truth and its push.
Prints the medians and their ratio, and with --write appends the result to bench/README.md.

With --phases, also where each path's time goes: the orchestrator runs with MAO_PHASE_TIMINGS=1
(orchestrator/phases.py: one span per phase on the step's path and per git process, written to
<data dir>/phase-timings.jsonl) and the by-hand path times each of its commands; the table has the
median per phase over the runs, both paths. The client's send and receive times (time.monotonic:
CLOCK_MONOTONIC, the orchestrator's clock too) place the HTTP exchange around the handler's span.
The load average is printed with every result: on a shared machine the absolute figures move with it.

    .venv/bin/python bench/pipeline_overhead.py [--runs 30] [--phases] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from harness import IMAGE, bench_node, record

from tests.api import Api

SCRIPT = "date +%s%N >> /usr/src/app/data/samples.txt"
# Issue 20: one step orchestrated within 1.10x of the same work done by hand (ratio of medians).
TARGET = 1.10


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


def by_hand_step(clone: Path, n: int, phases: dict[str, float] | None = None) -> float:
    """One step by hand; ``phases`` (if given) receives each command's seconds."""
    started = time.perf_counter()
    last = started

    def done(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        if phases is not None:
            phases[name] = phases.get(name, 0.0) + now - last
        last = now

    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            f"{clone}:/usr/src/app/data",
            IMAGE,
            "sh",
            "-c",
            SCRIPT,
        ],
        check=True,
        capture_output=True,
    )
    done("container (docker run --rm: create, start, wait, remove)")
    git(clone, "add", "-A")
    done("git add")
    git(clone, "commit", "-q", "-m", f"output of run {n}")
    done("git commit")
    git(clone, "push", "-q", "origin", "step-hand")
    done("git push (node branch)")
    git(clone, "checkout", "-q", "ground-truth")
    done("git checkout ground-truth")
    git(clone, "merge", "-q", "--no-ff", "-m", f"Merge step-hand (run {n})", "step-hand")
    done("git merge --no-ff")
    git(clone, "push", "-q", "origin", "ground-truth")
    done("git push (ground-truth)")
    git(clone, "checkout", "-q", "step-hand")
    done("git checkout step-hand")
    return time.perf_counter() - started


def api_setup(api: Api) -> None:
    api.tool("bench-tool", IMAGE)
    api.local_dataset("bench-data")
    step = {"name": "step", "tool": "bench-tool", "output_dataset": "bench-data", "cmd": ["sh", "-c", SCRIPT]}
    api.ok(api.post("/pipeline/init", {"name": "bench", "steps": [step]}))


@dataclass
class ApiSample:
    run_id: str
    sent: float  # time.monotonic() (the orchestrator's phase clock too)
    received: float


def api_step(api: Api, samples: list[ApiSample] | None = None) -> float:
    sent = time.monotonic()
    started = time.perf_counter()
    run = api.ok(api.post("/pipeline/run", {"name": "bench"}))
    elapsed = time.perf_counter() - started
    assert run["status"] == "succeeded", run
    if samples is not None:
        samples.append(ApiSample(run["id"], sent, time.monotonic()))
    return elapsed


# -- the per-phase breakdown (--phases) ---------------------------------------------------------------
HTTP_IN = "HTTP in: request, token, body (client -> handler)"
HTTP_OUT = "HTTP out: answer (handler -> client)"
UNCOVERED = "(in the handler, outside any phase: event loop, task hand-offs)"
REST = "(rest)"


@dataclass
class Breakdown:
    """Per run: ms per phase, the phase each sits in, git processes and their ms per phase."""

    ms: list[dict[str, float]] = field(default_factory=list)
    git_count: list[Counter[str]] = field(default_factory=list)
    git_ms: list[dict[str, float]] = field(default_factory=list)
    parent: dict[str, str | None] = field(default_factory=dict)
    order: dict[str, float] = field(
        default_factory=dict
    )  # median offset of the first start, for the rows' order


def read_breakdown(data_dir: Path, samples: list[ApiSample]) -> Breakdown:
    lines = {}
    for text in (data_dir / "phase-timings.jsonl").read_text().splitlines():
        entry = json.loads(text)
        lines[entry["run"]] = entry
    result = Breakdown()
    offsets: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        entry = lines[sample.run_id]
        spans = [(name, start, end) for name, start, end in entry["spans"]]
        phases = [s for s in spans if not s[0].startswith("git ")]
        gits = [s for s in spans if s[0].startswith("git ")]

        def inner(span: tuple[str, float, float], candidates: list[tuple[str, float, float]]) -> str | None:
            # The shortest other phase that contains the span: where it happened.
            around = [c for c in candidates if c is not span and c[1] <= span[1] and span[2] <= c[2]]
            return min(around, key=lambda c: c[2] - c[1])[0] if around else None

        ms: dict[str, float] = defaultdict(float)
        children: dict[str, float] = defaultdict(float)
        top = 0.0
        for span in phases:
            name, start, end = span
            ms[name] += (end - start) * 1000
            parent = inner(span, phases)
            result.parent.setdefault(name, parent)
            offsets[name].append(start - entry["began"])
            if parent is None:
                top += (end - start) * 1000
            else:
                children[parent] += (end - start) * 1000
        for parent, inside in children.items():
            ms[f"{parent} {REST}"] = ms[parent] - inside
            result.parent.setdefault(f"{parent} {REST}", parent)
            offsets[f"{parent} {REST}"].append(1e9)
        count: Counter[str] = Counter()
        git_ms: dict[str, float] = defaultdict(float)
        for span in gits:
            where = inner(span, phases) or UNCOVERED
            count[where] += 1
            git_ms[where] += (span[2] - span[1]) * 1000
            count["git processes, all"] += 1
            git_ms["git processes, all"] += (span[2] - span[1]) * 1000
        ms[HTTP_IN] = (entry["began"] - sample.sent) * 1000
        ms[HTTP_OUT] = (sample.received - entry["ended"]) * 1000
        ms[UNCOVERED] = (entry["ended"] - entry["began"]) * 1000 - top
        result.ms.append(ms)
        result.git_count.append(count)
        result.git_ms.append(git_ms)
    for name in (HTTP_IN, UNCOVERED):
        result.parent[name] = None
    offsets[HTTP_IN].append(-1.0)
    offsets[UNCOVERED].append(1e8)
    result.parent[HTTP_OUT] = None
    offsets[HTTP_OUT].append(1e10)
    result.order = {name: statistics.median(values) for name, values in offsets.items()}
    return result


def median_of(values: list[dict[str, float]], name: str) -> float:
    return statistics.median(v.get(name, 0.0) for v in values)


def phase_table(
    api_times: list[float], hand_times: list[float], orchestrated: Breakdown, hand: list[dict[str, float]]
) -> str:
    rows = [
        "| path | phase | median ms | git processes (median) | of which git ms (median) |",
        "|---|---|---|---|---|",
        f"| orchestrated | **whole step, as the client sees it** | **{statistics.median(api_times) * 1000:.1f}** | "
        f"{statistics.median(c['git processes, all'] for c in orchestrated.git_count):.0f} | "
        f"{median_of(orchestrated.git_ms, 'git processes, all'):.1f} |",
    ]

    def depth(name: str) -> int:
        level, parent = 0, orchestrated.parent.get(name)
        while parent is not None:
            level, parent = level + 1, orchestrated.parent.get(parent)
        return level

    def walk(parent: str | None) -> None:
        names = [n for n, p in orchestrated.parent.items() if p == parent]
        for name in sorted(names, key=lambda n: orchestrated.order.get(n, 0.0)):
            label = ("&nbsp;&nbsp;&nbsp;" * depth(name)) + (
                name.replace(f"{parent} ", "") if parent and name.endswith(REST) else name
            )
            count = statistics.median(c.get(name, 0) for c in orchestrated.git_count)
            git_ms = median_of(orchestrated.git_ms, name)
            git = f"{count:.0f} | {git_ms:.1f}" if count else " | "
            rows.append(f"| orchestrated | {label} | {median_of(orchestrated.ms, name):.1f} | {git} |")
            walk(name)

    walk(None)
    rows.append(f"| by hand | **whole step** | **{statistics.median(hand_times) * 1000:.1f}** | 7 | |")
    for name in hand[0]:
        rows.append(
            f"| by hand | {name} | {median_of(hand, name):.1f} | {0 if name.startswith('container') else 1} | |"
        )
    return "\n".join(rows)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"| {label} | {len(samples)} | {statistics.median(samples) * 1000:.0f} | {p90 * 1000:.0f} | {min(samples) * 1000:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--phases", action="store_true", help="per-phase medians of both paths")
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()

    load_before = load()
    env = {"MAO_PHASE_TIMINGS": "1"} if args.phases else {}
    with bench_node("bench", orchestrator_env=env) as node:
        api, tmp = node.api, node.tmp
        api_setup(api)
        clone = by_hand_setup(tmp)

        for n in range(args.warmup):
            api_step(api)
            by_hand_step(clone, -n)
        api_times, hand_times = [], []
        samples: list[ApiSample] = []
        hand_phases: list[dict[str, float]] = []
        for n in range(args.runs):  # alternate, so drift and noise hit both alike
            api_times.append(api_step(api, samples))
            phases: dict[str, float] = {}
            hand_times.append(by_hand_step(clone, n, phases))
            hand_phases.append({k: v * 1000 for k, v in phases.items()})
        breakdown = read_breakdown(tmp / "node", samples) if args.phases else None

    ratio = statistics.median(api_times) / statistics.median(hand_times)
    table = "\n".join(
        [
            "| | runs | median ms | p90 ms | min ms |",
            "|---|---|---|---|---|",
            summary("orchestrated (POST /pipeline/run)", api_times),
            summary("by hand (docker run --rm + git commit/push/merge/push)", hand_times),
        ]
    )
    verdict = "within" if ratio <= TARGET else "OVER"
    loads = f"load average (1/5/15 min) {load_before} before, {load()} after"
    print(table)
    print(f"\nratio of medians: {ratio:.2f} ({verdict} the {TARGET:.2f} target); {loads}")
    body = f"{table}\n\nRatio of medians: **{ratio:.2f}** ({verdict} the {TARGET:.2f} target); {loads}."
    if breakdown is not None:
        phases_table = phase_table(api_times, hand_times, breakdown, hand_phases)
        print(f"\n{phases_table}")
        body += f"\n\n{phases_table}"
    if args.write:
        flags = " --phases" if args.phases else ""
        record("", f".venv/bin/python bench/pipeline_overhead.py --runs {args.runs}{flags} --write", body)


if __name__ == "__main__":
    main()
