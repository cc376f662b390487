"""The gateway's per-instance write budget, /inspect over a prefix larger than etcd's message limit,
and etcd's history compaction."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from pathlib import Path

import aetcd
import pytest

from tests import servers
from tests.api import Api, assert_error

from .conftest import orchestrator_env

VALUE = "x" * (64 * 1024 - 100)  # a value just under the 64 KiB bound, as compact JSON


@pytest.fixture(scope="module")
def private_etcd(servers_tmp: Path) -> Iterator[servers.EtcdServer]:
    """Its own etcd: its size is measured, and its history compacted hard, without touching others'."""
    server = servers.start_etcd(servers_tmp / "etcd-budget", name="etcd-budget")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway_node(
    servers_tmp: Path, private_etcd: servers.EtcdServer, executor
) -> Iterator[servers.ServiceProcess]:
    """Default budgets; compaction every second, keeping only 50 revisions of history."""
    env = orchestrator_env(
        "node-budget",
        servers_tmp / "node-budget",
        private_etcd.endpoint,
        executor,
        MAO_RAW_TTL="5",
        MAO_ETCD_COMPACT_INTERVAL="1",
        MAO_ETCD_COMPACT_KEEP="50",
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-budget")
    yield service
    service.stop()


async def etcd_db_size(etcd: servers.EtcdServer) -> int:
    host, port = etcd.endpoint.rsplit(":", 1)
    async with aetcd.Client(host, int(port), timeout=10) as client:
        return int((await client.status()).db_size)


async def test_150_distinct_large_writes_in_a_second_are_bounded(
    gateway_node: servers.ServiceProcess, private_etcd: servers.EtcdServer
) -> None:
    etcd = private_etcd
    api = Api(gateway_node.url)
    base = f"raw/budget-{uuid.uuid4().hex[:8]}"
    before = await etcd_db_size(etcd)

    def write(i: int) -> int:
        return api.post("/write", {"key": f"{base}/k{i}", "value": VALUE}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(write, range(150)))
    accepted = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    # 256 KiB a second with 4 s of burst: 16 values at once, a few more as the budget refills.
    assert 10 <= accepted <= 40, accepted
    refused = api.post("/write", {"key": f"{base}/one-more", "value": VALUE})
    if refused.status_code == 429:
        body = assert_error(refused, 429)
        assert "across all keys" in body["message"] and int(refused.headers["Retry-After"]) >= 1
    grown = await etcd_db_size(etcd) - before
    # 150 values would be ~9.6 MB; what was accepted is a fraction of it (etcd grows in pages).
    assert grown < 6 * 1024 * 1024, grown


async def test_inspect_pages_a_prefix_larger_than_etcds_message_limit(
    gateway_node: servers.ServiceProcess, private_etcd: servers.EtcdServer
) -> None:
    etcd = private_etcd
    base = f"many-{uuid.uuid4().hex[:8]}"
    host, port = etcd.endpoint.rsplit(":", 1)
    async with aetcd.Client(host, int(port), timeout=30) as client:
        lease = await client.lease(60)
        # 100 x 64 KiB = 6.4 MB under one prefix: more than one gRPC answer (4 MiB) may carry.
        for i in range(100):
            stored = f'{{"value":"{VALUE}","by":"test","instance":"t","written_at":"now"}}'
            await client.put(f"/mao/v1/raw/{base}/k{i:03d}".encode(), stored.encode(), lease=lease)
    api = Api(gateway_node.url)
    found = api.ok(api.post("/inspect", {"key": f"raw/{base}"}))
    found.pop("truncated", None)
    assert len(found) == 100 and found[f"raw/{base}/k099"]["value"] == VALUE
    log = gateway_node.log_text()
    assert "Traceback" not in log


def test_history_is_compacted(gateway_node: servers.ServiceProcess) -> None:
    servers.wait_until(
        lambda: "etcd history compacted up to revision" in gateway_node.log_text(),
        timeout=60,
        interval=0.5,
        what="a compaction",
    )
