"""Data-trigger latency: from the upstream merge's push to the downstream run's start.

    .venv/bin/python bench/trigger_bench.py                 # both parts, 30 samples each (~3 minutes)
    .venv/bin/python bench/trigger_bench.py --only local --samples 10

One machine: three etcd members, three orchestrators (SQLite), one executor, the busybox image.
An upstream pipeline on ``bench-a`` writes dataset ``up``; a downstream pipeline reading ``up`` is
triggered by its ground-truth advances:
- local: the downstream pipeline and its trigger on ``bench-a`` only (``scope: "instance"``);
- federation: the downstream pipeline on all three instances, one ``scope: "federation"`` trigger
  (exactly one instance fires per advance; the bench also counts the fires).
Per sample: run the upstream pipeline (waiting for its end), read ``merged_at`` from
``/mao/v1/ground-truth/up`` (written right after the atomic push, under the dataset's lock), wait for
the downstream run of that commit, and take its ``created_at`` (the run is recorded as it starts)
minus ``merged_at``. Same host, same clock. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import BenchFederation, bench_federation, ms, percentile  # noqa: E402

from orchestrator.federation import keys  # noqa: E402
from orchestrator.federation.etcd import Etcd  # noqa: E402
from tests.api import Api, unique  # noqa: E402

NAMES = ("bench-a", "bench-b", "bench-c")
APP = "/usr/src/app"


class Bench:
    def __init__(self, federation: BenchFederation) -> None:
        self.federation = federation
        self.etcd = federation.etcd
        self.nodes = federation.nodes

    def api(self, name: str) -> Api:
        return self.federation.api(name)

    def merged_at(self, dataset: str) -> tuple[str, datetime]:
        host, port = self.etcd[0].endpoint.rsplit(":", 1)

        async def read() -> tuple[str, datetime]:
            etcd = Etcd([(host, int(port))])
            try:
                kv = await etcd.get(keys.ground_truth(dataset))
            finally:
                await etcd.close()
            assert kv is not None
            return kv.value["commit"], datetime.fromisoformat(kv.value["merged_at"])

        return asyncio.run(read())

    def measure(self, scope: str, samples: int) -> None:
        a = self.api("bench-a")
        tool, up, down = unique("tool"), unique("up"), unique("down")
        upstream, downstream = unique("producer"), unique("consumer")
        a.tool(tool)
        a.local_dataset(up)
        a.local_dataset(down)
        make = {
            "name": "make",
            "tool": tool,
            "output_dataset": up,
            "cmd": ["sh", "-c", f"echo $MAO_RUN_ID > {APP}/data/now"],
        }
        a.ok(a.post("/pipeline/init", {"name": upstream, "steps": [make]}))
        use = {
            "name": "use",
            "tool": tool,
            "input_dataset": up,
            "output_dataset": down,
            "cmd": ["sh", "-c", f"cp {APP}/input/now {APP}/data/seen-$MAO_INSTANCE"],
        }
        where = NAMES if scope == "federation" else NAMES[:1]
        for name in where:
            api = self.api(name)
            api.ok(api.post("/pipeline/init", {"name": downstream, "steps": [use]}))
        a.ok(a.post("/pipeline/run", {"name": downstream, "trigger": {"dataset": up}, "scope": scope}))
        time.sleep(1.0)  # every instance's watch has the trigger
        latencies: list[float] = []
        fired_by: dict[str, int] = {}
        announced: set[str] = set()
        for _ in range(samples):
            run = a.run(upstream)
            assert run["status"] == "succeeded", run
            commit, merged = self.merged_at(up)
            if commit in announced:
                # announce() is best effort: an etcd put that failed leaves the previous advance.
                print(f"- the merge of upstream run {run['id'][:12]} was not announced (key still at {commit[:12]})")
                continue
            announced.add(commit)
            found = None
            deadline = time.monotonic() + 60
            while found is None and time.monotonic() < deadline:
                for name in where:
                    api = self.api(name)
                    for candidate in api.ok(api.get("/runs", pipeline=downstream, limit=5)):
                        if candidate.get("trigger_commit") == commit:
                            found = (name, candidate)
                time.sleep(0.02)
            if found is None:
                print(f"- no downstream run for {commit[:12]} within 60 s")
                continue
            name, started = found
            fired_by[name] = fired_by.get(name, 0) + 1
            latencies.append((datetime.fromisoformat(started["created_at"]) - merged).total_seconds())
            # Let the downstream run end, so the next advance is not skipped as an overlap.
            api = self.api(name)
            while api.ok(api.get(f"/runs/{started['id']}"))["status"] in ("pending", "queued", "running"):
                time.sleep(0.05)
        total = sum(
            len([r for r in self.api(n).ok(self.api(n).get("/runs", pipeline=downstream, limit=1000))])
            for n in where
        )
        print(f"\n## data trigger, scope {scope} ({len(latencies)} samples)")
        if latencies:
            print(
                f"- merge pushed -> downstream run started: p50 {ms(percentile(latencies, 50))}, "
                f"p95 {ms(percentile(latencies, 95))}, p99 {ms(percentile(latencies, 99))}, max {ms(max(latencies))}"
            )
        print(f"- downstream runs: {total} for {samples} upstream merges; fired by {fired_by}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="local,federation", help="comma-separated: local, federation")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder (logs) afterwards")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    with bench_federation("trigger-bench", NAMES, keep=args.keep) as federation:
        bench = Bench(federation)
        if "local" in parts:
            bench.measure("instance", args.samples)
        if "federation" in parts:
            bench.measure("federation", args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
