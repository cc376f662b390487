"""How close does a fan-out step come to running its containers by hand?

One step fanned out over N shards (default 200, one input file each, each container sleeps 1 s and
copies its file to its output) with ``max_parallel`` P, through POST /pipeline/run on a real
orchestrator (SQLite, etcd, executor, Docker, a bare git remote): snapshot, N shard folders, N
containers, combining their outputs, one commit and one ground-truth vote.

Against: the same N containers started by hand with the same parallelism P (a pool of P threads,
each running the same image and command with the shard's input folder mounted read-only and an
empty output folder, through the Docker SDK as the executor does, or ``docker run --rm`` with
``--by-hand cli``), nothing else.

The two alternate (--rounds), so noise and drift hit both alike. The figure is the ratio of wall
times, hand / fan-out (1.0 = fan-out costs nothing; target >= 0.85). --write appends the result to
bench/README.md.

    .venv/bin/python bench/fanout_bench.py [--shards 200] [--parallel 8] [--sleep 1] [--rounds 2] [--by-hand sdk|cli] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from harness import IMAGE, bench_node, record

from tests.api import Api

HAND = {"sdk": "Docker SDK run/wait/remove", "cli": "`docker run --rm`"}
APP = "/usr/src/app"


def shard_script(sleep: float) -> str:
    return f"sleep {sleep:g}; cp {APP}/input/in/* {APP}/data/"


def make_inputs_script(count: int) -> str:
    # The input dataset: one file per shard, written by a first (untimed) pipeline.
    return f"mkdir -p {APP}/data/in; i=0; while [ $i -lt {count} ]; do echo $i > {APP}/data/in/$i.txt; i=$((i+1)); done"


def api_setup(api: Api, args: argparse.Namespace) -> None:
    api.tool("bench-tool", IMAGE)
    api.local_dataset("bench-in")
    api.local_dataset("bench-out")
    make = {
        "name": "make",
        "tool": "bench-tool",
        "output_dataset": "bench-in",
        "cmd": ["sh", "-c", make_inputs_script(args.shards)],
    }
    api.ok(api.post("/pipeline/init", {"name": "bench-inputs", "steps": [make]}))
    run = api.ok(api.post("/pipeline/run", {"name": "bench-inputs"}))
    assert run["status"] == "succeeded", run
    fan = {
        "name": "fan",
        "tool": "bench-tool",
        "input_dataset": "bench-in",
        "output_dataset": "bench-out",
        "cmd": ["sh", "-c", shard_script(args.sleep)],
        "fan_out": {"glob": "in/*.txt", "split_size": 1, "max_parallel": args.parallel},
    }
    api.ok(api.post("/pipeline/init", {"name": "bench-fan", "steps": [fan]}))


def cpu_seconds(pid: int | None) -> float:
    """CPU time of a process and the children it waited for (git), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def api_round(api: Api) -> float:
    started = time.perf_counter()
    run = api.ok(api.post("/pipeline/run", {"name": "bench-fan"}))
    elapsed = time.perf_counter() - started
    assert run["status"] == "succeeded", run
    (step,) = run["steps"]
    assert step["shards"]["succeeded"] == step["shards"]["count"], step["shards"]
    return elapsed


def hand_setup(tmp: Path, count: int) -> Path:
    inputs = tmp / "hand-inputs"
    for n in range(count):
        folder = inputs / str(n) / "in"
        folder.mkdir(parents=True)
        (folder / f"{n}.txt").write_text(f"{n}\n")
    return inputs


def hand_round(tmp: Path, inputs: Path, args: argparse.Namespace) -> float:
    outputs = tmp / "hand-outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    user = f"{os.getuid()}:{os.getgid()}"
    client = docker.from_env(timeout=600)

    def one(n: int) -> None:
        output = outputs / str(n)
        output.mkdir(parents=True)
        if args.by_hand == "cli":
            subprocess.run(
                [
                    "docker", "run", "--rm", "--network", "host", "--user", user,
                    "-v", f"{inputs / str(n)}:{APP}/input:ro", "-v", f"{output}:{APP}/data",
                    IMAGE, "sh", "-c", shard_script(args.sleep),
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
            return
        # The Docker SDK, as the executor uses it: create + start, wait, remove.
        container = client.containers.run(
            IMAGE,
            ["sh", "-c", shard_script(args.sleep)],
            detach=True,
            user=user,
            network_mode="host",
            volumes={
                str(inputs / str(n)): {"bind": f"{APP}/input", "mode": "ro"},
                str(output): {"bind": f"{APP}/data", "mode": "rw"},
            },
        )
        try:
            status = container.wait()
            assert status["StatusCode"] == 0, status
        finally:
            container.remove(force=True)

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            list(pool.map(one, range(args.shards)))
    finally:
        client.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--by-hand",
        choices=["sdk", "cli"],
        default="sdk",
        help="start the baseline's containers with the Docker SDK or `docker run`",
    )
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()

    with bench_node(
        "bench-fanout", executor_env={"MAO_EXECUTOR_MAX_PARALLEL": str(args.parallel)}, api_timeout=3600
    ) as node:
        api, tmp, orchestrator, executor = node.api, node.tmp, node.orchestrator, node.executor
        api_setup(api, args)
        inputs = hand_setup(tmp, args.shards)

        api_times, hand_times, api_cpu, hand_cpu = [], [], [], []
        services = (orchestrator.pid, executor.pid)
        for n in range(args.rounds):  # alternate, so drift and noise hit both alike
            first, second = (api_round, hand_round) if n % 2 == 0 else (hand_round, api_round)
            for fn in (first, second):
                if fn is api_round:
                    before = [cpu_seconds(pid) for pid in services]
                    api_times.append(api_round(api))
                    used = [cpu_seconds(pid) - was for pid, was in zip(services, before, strict=True)]
                    api_cpu.append(sum(used))
                    print(f"  CPU s: orchestrator {used[0]:.1f}, executor {used[1]:.1f}", flush=True)
                else:
                    before = time.process_time()
                    hand_times.append(hand_round(tmp, inputs, args))
                    hand_cpu.append(time.process_time() - before)
            print(
                f"round {n + 1}: fan-out {api_times[-1]:.1f} s (orchestrator + executor CPU {api_cpu[-1]:.1f} s), "
                f"by hand {hand_times[-1]:.1f} s (its CPU {hand_cpu[-1]:.1f} s); load {os.getloadavg()[0]:.1f}",
                flush=True,
            )

        ratio = statistics.median(hand_times) / statistics.median(api_times)
        ideal = args.shards / args.parallel * args.sleep
        table = "\n".join(
            [
                "| | rounds | median s | min s | max s | CPU s (median) |",
                "|---|---|---|---|---|---|",
                *(
                    f"| {label} | {len(times)} | {statistics.median(times):.1f} | {min(times):.1f} | "
                    f"{max(times):.1f} | {statistics.median(cpu):.1f} |"
                    for label, times, cpu in (
                        ("fan-out step (POST /pipeline/run; orchestrator + executor)", api_times, api_cpu),
                        (
                            f"by hand ({args.parallel} threads, {HAND[args.by_hand]}; this script)",
                            hand_times,
                            hand_cpu,
                        ),
                    )
                ),
            ]
        )
        verdict = "meets" if ratio >= 0.85 else "BELOW"
        print(table)
        print(f"\nratio hand / fan-out: {ratio:.3f} ({verdict} the 0.85 target); sleeps alone: {ideal:.0f} s")
    if args.write:
        record(
            "Fan-out",
            f".venv/bin/python bench/fanout_bench.py --shards {args.shards} --parallel {args.parallel} "
            f"--sleep {args.sleep:g} --rounds {args.rounds} --by-hand {args.by_hand} --write",
            f"{table}\n\nRatio of wall times, hand / fan-out: **{ratio:.3f}** ({verdict} the 0.85 target); "
            f"the sleeps alone take {ideal:.0f} s at this parallelism; load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} cores at the end.",
        )


if __name__ == "__main__":
    main()
