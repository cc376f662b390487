"""How much a burst of gateway writes grows etcd, and what compaction and defragmentation give back.

    .venv/bin/python bench/etcd_growth.py            # about half a minute

The issue's scenario: 150 distinct 64 KiB raw entries written within one second (8 client threads),
once against an orchestrator with the default per-instance budget, once with the budget lifted (what
the per-key rate alone allowed before). For each: how many writes were accepted, etcd's database size
before, right after, after the entries' TTL (5 s), 20 small writes (history moving on) and compaction (``MAO_ETCD_COMPACT_INTERVAL=2``,
``MAO_ETCD_COMPACT_KEEP=10``), and after a defragmentation. Each run has its own fresh etcd member.

Real servers only (tests/servers/); nothing here is a test and nothing asserts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
from pathlib import Path

import aetcd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import bench_federation  # noqa: E402

from orchestrator.federation import keys  # noqa: E402
from tests import servers  # noqa: E402

WRITES = 150
VALUE = "x" * (64 * 1024 - 100)


async def db_size(etcd: servers.EtcdServer, defragment: bool = False) -> int:
    async with aetcd.Client(etcd.host, etcd.client_port, timeout=30) as client:
        if defragment:
            await client.defragment()
        return int((await client.status()).db_size)


async def raw_keys(etcd: servers.EtcdServer) -> int:
    async with aetcd.Client(etcd.host, etcd.client_port, timeout=30) as client:
        return len(list(await client.get_prefix(keys.RAW.encode(), keys_only=True)))


def run(label: str, extra: dict[str, str]) -> None:
    settings = {
        "MAO_RAW_TTL": "5",
        "MAO_ETCD_COMPACT_INTERVAL": "2",
        "MAO_ETCD_COMPACT_KEEP": "10",
        **extra,
    }
    name = f"bench-{label}"
    # Each run its own fresh etcd member.
    with bench_federation(
        f"etcd-growth-{label}", [name], etcd_members=1, executor=False, node_env=lambda _: settings
    ) as federation:
        etcd, node = federation.etcd[0], federation.nodes[name]
        api = federation.api(name)
        before = asyncio.run(db_size(etcd))
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda i: api.post("/write", {"key": f"raw/burst/k{i}", "value": VALUE}).status_code,
                    range(WRITES),
                )
            )
        took = time.perf_counter() - start
        after = asyncio.run(db_size(etcd))
        time.sleep(5 + 1 + 1)  # the TTL and the shared lease's second: etcd deletes the entries
        # Ongoing activity: a lease's expiry deletes its keys in one revision, and a compaction keeps
        # KEEP revisions, so the deleted values go once the history has moved on past them.
        for i in range(20):
            api.post("/write", {"key": f"raw/after/k{i}", "value": i})
            time.sleep(0.1)
        time.sleep(2 * 2)  # two compaction rounds
        compacted = asyncio.run(db_size(etcd))
        compactions = node.log_text().count("etcd history compacted")
        left = asyncio.run(raw_keys(etcd))
        defragmented = asyncio.run(db_size(etcd, defragment=True))
        print(
            f"{label:<16} {statuses.count(200):>3}/{WRITES} accepted ({statuses.count(429)} x 429) in {took:.2f} s; "
            f"etcd {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB; after TTL + compaction {compacted / 1e6:.2f} MB; "
            f"after defrag {defragmented / 1e6:.2f} MB ({compactions} compactions logged, {left} raw keys left)"
        )


def main() -> None:
    run("default-budget", {})
    run(
        "no-budget",
        {
            "MAO_GATEWAY_BYTES_PER_SECOND": str(10**9),
            "MAO_GATEWAY_ENTRIES_PER_SECOND": "100000",
            "MAO_GATEWAY_BURST": "100000",
            "MAO_GATEWAY_RATE": "10000",
        },
    )


if __name__ == "__main__":
    main()
