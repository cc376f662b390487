"""The one decoding edge against a real etcd: values nobody can decode are skipped with one warning
naming the key, listings answer the rest, a watch moves past them, and no listing depends on one
etcd answer fitting in gRPC's 4 MiB.

Each test writes under a prefix of its own in the session's etcd (and removes it again): the values
here are what a member holding a valid certificate could put there with its own client.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import aetcd
import pytest

from orchestrator.federation.answers import WatchEvent, WatchTooLarge
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.watch import PrefixWatch
from tests import servers

# What a hostile writer can put into a key: none of it may stop a reader.
UNDECODABLE = {
    "deep": b"[" * 5000 + b"]" * 5000,
    "deep-but-parsable": b"[" * 300 + b"]" * 300,
    "nan": b'{"a": NaN}',
    "repr": b"{'tool': 'x'}",
    "surrogate": b'{"a": "\\ud800"}',
    "utf16": '{"a": 1}'.encode("utf-16"),
    "binary": bytes(range(256)),
    "huge-int": b"1" * 5000,
}


@pytest.fixture
async def client(etcd: servers.EtcdServer) -> AsyncIterator[Etcd]:
    client = Etcd([(etcd.host, etcd.client_port)], timeout=5)
    yield client
    await client.close()


@pytest.fixture
async def prefix(etcd: servers.EtcdServer) -> AsyncIterator[str]:
    name = f"/test/values-{uuid.uuid4().hex[:8]}/"
    yield name
    async with aetcd.Client(etcd.host, etcd.client_port) as raw:
        await raw.delete_prefix(name.encode())


async def put_raw(etcd: servers.EtcdServer, key: bytes, value: bytes) -> None:
    async with aetcd.Client(etcd.host, etcd.client_port) as raw:
        await raw.put(key, value)


async def test_undecodable_values_are_skipped_by_listings_and_named_by_get(
    client: Etcd, etcd: servers.EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    for name, raw in UNDECODABLE.items():
        await put_raw(etcd, f"{prefix}{name}".encode(), raw)
    await put_raw(etcd, prefix.encode() + b"\xff\xfe-key", b"1")
    await client.put(f"{prefix}fine", {"ok": True})
    with caplog.at_level(logging.WARNING):
        listed = await client.list_prefix(prefix)
        again = await client.list_prefix(prefix)
    assert [kv.key for kv in listed] == [f"{prefix}fine"] == [kv.key for kv in again]
    warnings = [r.getMessage() for r in caplog.records if "skipping the etcd value" in r.getMessage()]
    assert len(warnings) == len(UNDECODABLE) + 1  # once per key and version, not at every listing
    for name in UNDECODABLE:
        assert any(f"{prefix}{name} " in w for w in warnings), name
        one = await client.get(f"{prefix}{name}")
        assert one is not None and one.value is None and one.problem, name


async def test_a_watch_moves_past_undecodable_values(
    client: Etcd, etcd: servers.EtcdServer, prefix: str
) -> None:
    seen: list[WatchEvent] = []
    done = asyncio.Event()

    async def on_list(_values: list, _revision: int) -> None:
        pass

    async def on_event(event: WatchEvent) -> None:
        seen.append(event)
        if event.key.endswith("last"):
            done.set()

    watch = PrefixWatch(client, prefix, on_list=on_list, on_event=on_event, what="test watch")
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.5)
        for name, raw in UNDECODABLE.items():
            await put_raw(etcd, f"{prefix}{name}".encode(), raw)
        await client.put(f"{prefix}last", {"ok": True})
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [e.key for e in seen] == [f"{prefix}last"]


async def test_listings_are_paged_by_bytes(client: Etcd, prefix: str) -> None:
    """Eight values of 1 MiB: one answer would be 8 MiB, twice what gRPC takes by default."""
    big = "x" * (1024 * 1024)
    for i in range(8):
        await client.put(f"{prefix}{i:02d}", {"v": big})
    listed, revision = await client.list_with_revision(prefix)
    assert [kv.key for kv in listed] == [f"{prefix}{i:02d}" for i in range(8)]
    assert revision >= listed[-1].mod_revision
    newest = await client.list_prefix(prefix, limit=3, newest_first=True)
    assert [kv.key for kv in newest] == [f"{prefix}{i:02d}" for i in (7, 6, 5)]
    scanned = [kv.key async for kv in client.scan(prefix, start=f"{prefix}05")]
    assert scanned == [f"{prefix}{i:02d}" for i in (5, 6, 7)]


async def test_a_watch_too_large_to_catch_up_lists_again(client: Etcd, prefix: str) -> None:
    start = await client.revision()
    big = "x" * (1024 * 1024)
    for i in range(6):
        await client.put(f"{prefix}{i}", {"v": big})
    with pytest.raises(WatchTooLarge):
        async for _ in client.watch_prefix(prefix, start + 1):
            pass
    lists: list[int] = []

    async def on_list(values: list, _revision: int) -> None:
        lists.append(len(values))

    async def on_event(_event: WatchEvent) -> None:
        pass

    watch = PrefixWatch(client, prefix, on_list=on_list, on_event=on_event, what="test", start_revision=start + 1)
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(100):
            if lists:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert lists == [6]  # it fell back to listing the prefix (in pages), then watched from there
