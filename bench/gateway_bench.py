"""Gateway benchmark on one machine: one etcd member, one orchestrator (SQLite), its raw listener.

    .venv/bin/python bench/gateway_bench.py            # about half a minute

What is measured (printed; copy the results into bench/README.md with the command):
- /write and /read latency, one client, sequential, each write to its own key: p50/p95, with a
  gateway key (the key is looked up in SQL on every request) and with the admin token;
- /write throughput with 8 client threads for 5 s (distinct keys, so the rate limit never applies);
- the raw listener with its defaults (commit every 5 s or 100 entries): how long after the last
  acknowledged write every entry is in ground-truth, and how many commits that took.

Real servers only (tests/servers/); nothing here is a test and nothing asserts.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import bench_federation, percentile  # noqa: E402

from tests import gitutil, servers  # noqa: E402
from tests.api import Api, unique  # noqa: E402

SEQUENTIAL = 500
THREADS, SECONDS = 8, 5.0


def latencies(api: Api, route: str, bodies: list[dict]) -> list[float]:
    taken = []
    for body in bodies:
        start = time.perf_counter()
        response = api.post(route, body)
        taken.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
    return taken


def show(what: str, taken: list[float]) -> None:
    print(
        f"{what:<32} p50 {statistics.median(taken) * 1000:6.2f} ms   p95 {percentile(taken, 95) * 1000:6.2f} ms"
        f"   (n={len(taken)})"
    )


def main() -> None:
    settings = {
        "MAO_RAW_DATASET": "bench-raw",
        # Latency and throughput are measured here, not the per-instance budget (bench/etcd_growth.py).
        "MAO_GATEWAY_BYTES_PER_SECOND": str(10**9),
        "MAO_GATEWAY_ENTRIES_PER_SECOND": "100000",
    }
    with bench_federation(
        "gateway-bench", ["bench-gw"], etcd_members=1, executor=False, node_env=lambda _: settings
    ) as federation:
        orchestrator = federation.nodes["bench-gw"]
        admin = federation.api("bench-gw")
        master = admin.ok(admin.post("/bare-repo/init", {"name": "bench-raw"}))["path"]
        admin.ok(
            admin.post("/registry/datasets", {"name": "bench-raw", "body": {"master": master, "nodes": []}})
        )
        tool = Api(orchestrator.url, admin.ok(admin.post("/gateway/keys", {"name": "bench"}))["key"])

        prefix = unique("seq")
        bodies = [{"key": f"{prefix}/k{i}", "value": {"i": i, "text": "x" * 100}} for i in range(SEQUENTIAL)]
        latencies(tool, "/write", bodies[:50])  # warm up
        show("/write, gateway key", latencies(tool, "/write", bodies))
        show(
            "/write, admin token", latencies(admin, "/write", [{**b, "key": b["key"] + "a"} for b in bodies])
        )
        show("/read, gateway key", latencies(tool, "/read", [{"key": b["key"]} for b in bodies]))
        show("/inspect (500 entries)", latencies(tool, "/inspect", [{"key": prefix}] * 20))

        counts = [0] * THREADS
        stop = time.monotonic() + SECONDS

        def writer(n: int) -> None:
            api = Api(orchestrator.url, tool.session.headers["Authorization"].removeprefix("Bearer "))
            while time.monotonic() < stop:
                api.ok(api.post("/write", {"key": f"{prefix}/t{n}-{counts[n]}", "value": counts[n]}))
                counts[n] += 1

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"/write throughput, {THREADS} clients    {sum(counts) / SECONDS:.0f} writes/s")

        total = 2 * SEQUENTIAL + 50 + sum(counts)
        last_ack = time.monotonic()

        def committed() -> int:
            if "ground-truth" not in gitutil.branches(master):
                return 0
            return len(
                gitutil.git(master, "ls-tree", "-r", "--name-only", "ground-truth", "--", prefix).split()
            )

        servers.wait_until(lambda: committed() >= total, timeout=300, interval=0.2, what="all entries in git")
        commits = gitutil.git(master, "rev-list", "--no-merges", "--count", "raw-bench-gw").strip()
        print(
            f"raw listener: {total} entries in ground-truth {time.monotonic() - last_ack:.1f} s after the last "
            f"write, in {commits} commits (defaults: every 5 s or 100 entries)"
        )


if __name__ == "__main__":
    main()
