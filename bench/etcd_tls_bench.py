"""What TLS with client certificates costs the orchestrator's etcd calls, on one machine.

    .venv/bin/python bench/etcd_tls_bench.py            # about twenty seconds

Two etcd members on loopback started for the run, one plain HTTP and one with client and peer
certificate authentication (certificates from ctl.pki, as the installer makes them). Through the
orchestrator's own client (orchestrator.federation.etcd.Etcd), alternating between the two so drift
hits both alike: the first call on a new client (channel + handshake), then sequential put+get pairs
on an open client. Prints p50/p95 in ms; copy the results into bench/README.md. Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import percentile  # noqa: E402

from ctl import pki  # noqa: E402
from orchestrator.federation.etcd import Etcd  # noqa: E402
from orchestrator.federation.tls import EtcdTls  # noqa: E402
from tests import servers  # noqa: E402


async def first_call(endpoint: tuple[str, int], tls: EtcdTls | None) -> float:
    client = Etcd([endpoint], timeout=5, tls=tls)
    try:
        start = time.perf_counter()
        await client.get("/bench/absent")
        return (time.perf_counter() - start) * 1000
    finally:
        await client.close()


async def pairs(client: Etcd, n: int) -> list[float]:
    taken = []
    for i in range(n):
        start = time.perf_counter()
        await client.put(f"/bench/k{i % 50}", {"i": i, "text": "x" * 100})
        await client.get(f"/bench/k{i % 50}")
        taken.append((time.perf_counter() - start) * 1000)
    return taken


async def measure(plain: servers.EtcdServer, secure: servers.EtcdServer, rounds: int, n: int) -> None:
    assert secure.tls is not None
    tls = EtcdTls.from_files(secure.tls / "ca.crt", secure.tls / "client.crt", secure.tls / "client.key")
    targets = {
        "plain": ((plain.host, plain.client_port), None),
        "tls": ((secure.host, secure.client_port), tls),
    }
    connect: dict[str, list[float]] = {k: [] for k in targets}
    calls: dict[str, list[float]] = {k: [] for k in targets}
    clients = {k: Etcd([endpoint], timeout=5, tls=t) for k, (endpoint, t) in targets.items()}
    try:
        for client in clients.values():
            await pairs(client, 20)  # warm-up
        for _ in range(rounds):
            for name, (endpoint, t) in targets.items():
                connect[name].append(await first_call(endpoint, t))
                calls[name] += await pairs(clients[name], n)
    finally:
        for client in clients.values():
            await client.close()
    for name in targets:
        print(
            f"{name:5}  first call on a new client p50 {percentile(connect[name], 50):6.2f} ms "
            f"p95 {percentile(connect[name], 95):6.2f} ms ({len(connect[name])} clients); "
            f"put+get p50 {percentile(calls[name], 50):5.2f} ms p95 {percentile(calls[name], 95):5.2f} ms "
            f"({len(calls[name])} pairs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=100, help="put+get pairs per round and target")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mao-etcd-tls-bench-"))
    members: list[servers.EtcdServer] = []
    try:
        ca = pki.create_authority("bench")
        members.append(servers.start_etcd(root, name="bench-plain"))
        certs = servers.make_member_pki(root / "pki", ca, "bench-tls")
        members.append(servers.start_etcd(root, name="bench-tls", tls=certs))
        asyncio.run(measure(members[0], members[1], args.rounds, args.pairs))
    finally:
        for member in members:
            member.destroy()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
