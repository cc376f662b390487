"""Federation benchmarks on one machine: three etcd members, three orchestrators, one executor.

    .venv/bin/python bench/federation_bench.py                  # all three, about 7 minutes
    .venv/bin/python bench/federation_bench.py --only registry  # a few seconds

What is measured (results are printed; copy them into bench/README-federation.md with the command):
- registry: a tool registered on instance A, read on instance B until it is there (B polls as fast
  as it can); p50/p95 over many samples. Also the delay until a federation schedule created on A is
  armed on B (the etcd watch).
- failover: a federation-wide schedule ticking every minute, eligible on all three instances; the
  instance that fired a tick is SIGKILLed (alternately just after a tick and just before the next
  one), and we time SIGKILL -> next tick fired by another instance, and check that no tick is missed
  or fired twice. Member TTL 10 s (the default).
- merges: the three instances run the same pipeline back to back for a while, each writing its own
  file into one dataset; ground-truth merge commits per minute, in total and per instance.

Real servers only (tests/servers/); nothing here is a test and nothing asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import BenchFederation, bench_federation, ms, percentile  # noqa: E402

from tests import gitutil, servers  # noqa: E402
from tests.api import Api, unique  # noqa: E402

NAMES = ("bench-a", "bench-b", "bench-c")


class Bench:
    def __init__(self, federation: BenchFederation, member_ttl: int) -> None:
        self.federation = federation
        self.member_ttl = member_ttl
        self.root = federation.root
        self.etcd = federation.etcd
        self.nodes = federation.nodes

    def api(self, name: str) -> Api:
        return self.federation.api(name)

    # -- registry ---------------------------------------------------------------------------------
    def registry(self, samples: int) -> None:
        a, b = self.api("bench-a"), self.api("bench-b")
        delays, polls = [], []
        for _ in range(samples):
            tool = unique("bench-tool")
            a.tool(tool)
            written = time.perf_counter()
            count = 1
            while b.get(f"/registry/tools/{tool}").status_code != 200:
                count += 1
            delays.append(time.perf_counter() - written)
            polls.append(count)
        print(f"\n## registry propagation A -> B ({samples} tools)")
        print(
            f"- visible on B after: p50 {ms(percentile(delays, 50))}, p95 {ms(percentile(delays, 95))}, "
            f"max {ms(max(delays))} (one HTTP read on B takes about that long)"
        )
        print(f"- reads on B until visible: {statistics.mean(polls):.2f} on average, at most {max(polls)}")

        data = unique("bench-data")
        a.local_dataset(data)
        step = {"name": "s", "tool": tool, "output_dataset": data, "cmd": ["true"]}
        pipeline = unique("bench-armed")
        a.ok(a.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
        armed = []
        for _ in range(min(samples, 50)):
            job = a.ok(
                a.post("/pipeline/run", {"name": pipeline, "cron": "0 0 1 1 *", "scope": "federation"})
            )
            created = time.perf_counter()
            while job["job_id"] not in b.ok(b.get("/jobs")):
                pass
            armed.append(time.perf_counter() - created)
            a.ok(a.delete(f"/jobs/{job['job_id']}"))
        print(
            f"- federation schedule created on A armed on B after (etcd watch, {len(armed)} samples): "
            f"p50 {ms(percentile(armed, 50))}, p95 {ms(percentile(armed, 95))}, max {ms(max(armed))}"
        )

    # -- failover ---------------------------------------------------------------------------------
    def failover(self, rounds: int) -> None:
        a = self.api("bench-a")
        tool, data, pipeline = unique("tool"), unique("bench-tick"), unique("bench-cron")
        a.tool(tool)
        a.local_dataset(data)
        step = {
            "name": "tick",
            "tool": tool,
            "output_dataset": data,
            "cmd": ["sh", "-c", "date > /usr/src/app/data/now"],
        }
        for name in NAMES:
            self.api(name).ok(self.api(name).post("/pipeline/init", {"name": pipeline, "steps": [step]}))
        job = a.ok(a.post("/pipeline/run", {"name": pipeline, "cron": "* * * * *", "scope": "federation"}))[
            "job_id"
        ]
        print(f"\n## failover of a federation-wide schedule (every minute, member TTL {self.member_ttl} s)")
        results = []
        try:
            ticks = self._ticks(job, 1)
            for round_ in range(rounds):
                winner = ticks[0]["instance"]
                early = round_ % 2 == 0  # alternately just after the tick, and 2 s before the next one
                if not early:
                    next_due = datetime.fromisoformat(ticks[0]["due_at"]).timestamp() + 60
                    time.sleep(max(0.0, next_due - 2 - time.time()))
                else:
                    time.sleep(5)
                self.nodes[winner].kill()
                killed = time.time()
                ticks = self._ticks(job, len(ticks) + 1)
                fired = datetime.fromisoformat(ticks[0]["recorded_at"]).timestamp()
                late = fired - datetime.fromisoformat(ticks[0]["due_at"]).timestamp()
                results.append((winner, ticks[0]["instance"], fired - killed, "after" if early else "before"))
                print(
                    f"- round {round_ + 1}: SIGKILL {winner} {'5 s after a tick' if early else '2 s before a tick'}"
                    f" -> next tick {ticks[0]['outcome']} by {ticks[0]['instance']} {fired - killed:.1f} s later"
                    f" ({late:.2f} s after it was due)"
                )
                self.nodes[winner].process.start()
                self.nodes[winner].wait_ready()
        finally:
            a.delete(f"/jobs/{job}")
        due = sorted(datetime.fromisoformat(t["due_at"]) for t in ticks)
        gaps = [(later - earlier).total_seconds() for earlier, later in zip(due, due[1:], strict=False)]
        runs = sum(
            1
            for name in NAMES
            for r in self.api(name).ok(self.api(name).get("/runs", limit=1000))
            if r["schedule_id"] == job
        )
        fired = [t for t in ticks if t["outcome"] == "fired"]
        print(
            f"- ticks observed: {len(ticks)}, fired: {len(fired)}, runs started federation-wide: {runs}, "
            f"missed (gap > 60 s): {sum(g > 60 for g in gaps)}, fired elsewhere after every kill: "
            f"{all(w != n for w, n, _, _ in results)}"
        )

    def _ticks(self, job: str, count: int) -> list[dict]:
        """The schedule's tick records (full, newest first) once ``count`` are decided."""

        def ready() -> list[dict] | None:
            for name in NAMES:
                if not self.nodes[name].alive:
                    continue
                listed = next(
                    s
                    for s in self.api(name).ok(self.api(name).get("/federation/schedules"))
                    if s["id"] == job
                )
                decided = [t for t in listed["ticks"] if t["outcome"] != "claimed"]
                if len(decided) < count:
                    return None
                return decided
            return None

        return servers.wait_until(ready, timeout=150, interval=0.2, what=f"{count} ticks")

    # -- merges -----------------------------------------------------------------------------------
    def merges(self, seconds: float) -> None:
        a = self.api("bench-a")
        tool, data, pipeline = unique("tool"), unique("bench-votes"), unique("bench-vote")
        a.tool(tool)
        repo = a.local_dataset(data)
        script = 'echo "$MAO_RUN_ID" > /usr/src/app/data/$MAO_INSTANCE.txt'
        step = {"name": "vote", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", script]}
        for name in NAMES:
            self.api(name).ok(self.api(name).post("/pipeline/init", {"name": pipeline, "steps": [step]}))
        before = gitutil.tip(repo, "ground-truth")
        counts = dict.fromkeys(NAMES, 0)
        failures = dict.fromkeys(NAMES, 0)
        deadline = time.monotonic() + seconds

        def loop(name: str) -> None:
            api = self.api(name)
            while time.monotonic() < deadline:
                run = api.run(pipeline)
                if run["status"] == "succeeded" and run["steps"][0]["merge"] == "merged":
                    counts[name] += 1
                else:
                    failures[name] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=loop, args=(name,)) for name in NAMES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        merges = gitutil.git(repo, "rev-list", "--merges", f"{before}..ground-truth").split()
        per_minute = len(merges) / elapsed * 60
        print(f"\n## ground-truth merges with three instances voting into one dataset ({elapsed:.0f} s)")
        print(
            f"- merge commits on ground-truth: {len(merges)} = {per_minute:.1f} per minute "
            f"({', '.join(f'{n}: {c}' for n, c in counts.items())}; runs not merged: {sum(failures.values())})"
        )
        print(
            f"- one run (container + commit + locked merge) every {elapsed / max(1, len(merges)) * 3:.2f} s per instance"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="registry,failover,merges", help="comma-separated parts to run")
    parser.add_argument("--samples", type=int, default=200, help="registry samples")
    parser.add_argument("--failover-rounds", type=int, default=4)
    parser.add_argument("--merge-seconds", type=float, default=60)
    parser.add_argument("--member-ttl", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder (logs) afterwards")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]

    def node_env(name: str) -> dict[str, str]:
        return {"MAO_MEMBER_TTL": str(args.member_ttl), "MAO_LABELS": f"site={name}"}

    with bench_federation("fed-bench", NAMES, node_env=node_env, keep=args.keep) as federation:
        bench = Bench(federation, args.member_ttl)
        if "registry" in parts:
            bench.registry(args.samples)
        if "failover" in parts:
            bench.failover(args.failover_rounds)
        if "merges" in parts:
            bench.merges(args.merge_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
