"""How long does a fully cached re-run take?

A 5-step straight-line pipeline with ``cache: true`` on every step runs once for real (containers,
commits, merges); then the same pipeline is re-run ``--runs`` times with nothing changed, so every
step is ``cached`` (no container, no commit). Prints the end-to-end time of ``POST /pipeline/run``
(wait: true) per re-run and per step; target <= 50 ms per step. With --write, appends to README.md.

    .venv/bin/python bench/cached_rerun.py [--runs 20] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import servers  # noqa: E402
from tests.api import Api  # noqa: E402

IMAGE = "busybox:latest"
STEPS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="append the result to bench/README.md")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mao-bench-cache-"))
    started_docker, docker_handle = servers.ensure_docker(tmp / "dockerd")
    try:
        servers.build_busybox_image(IMAGE)
        etcd = servers.start_etcd(tmp / "etcd", name="bench-cache")
        instance = f"bench-cache-{os.getpid()}"  # executors on one engine share leftovers by name
        executor = servers.start_executor({"MAO_INSTANCE_NAME": instance}, log_dir=tmp / "logs")
        env = {
            "MAO_INSTANCE_NAME": instance,
            "MAO_DATA_DIR": str(tmp / "node"),
            "MAO_ETCD_ENDPOINTS": etcd.endpoint,
            "MAO_EXECUTOR_URL": executor.url,
            "MAO_EXECUTOR_TOKEN": executor.token or "",
            "MAO_LOG_LEVEL": "WARNING",
        }
        orchestrator = servers.start_orchestrator(env, log_dir=tmp / "logs", name="bench-cache")
        api = Api(orchestrator.url, orchestrator.token)
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
            with open(ROOT / "bench" / "README.md", "a") as readme:
                readme.write(
                    f"\n### Cached re-run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
                    f"{os.cpu_count()} cores, Python {platform.python_version()}\n\n"
                    f"`.venv/bin/python bench/cached_rerun.py --runs {args.runs} --write`\n\n{table}\n\n"
                    f"**{per_step:.1f} ms per step** ({verdict} the 50 ms target).\n"
                )
        orchestrator.stop()
        executor.stop()
        etcd.stop()
    finally:
        if started_docker:
            servers.stop_docker(docker_handle)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
