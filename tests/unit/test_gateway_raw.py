"""RawStore on a fake etcd: one lease per second of writes, a lost lease replaced, inspect's bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.errors import BadRequest, NotFound, PayloadTooLarge
from orchestrator.federation.answers import KeyValue
from orchestrator.federation.failover import LeaseNotFound
from orchestrator.gateway import raw as raw_module
from orchestrator.gateway.limits import (
    MAX_INSPECT_ENTRIES,
    MAX_NESTING,
    RateLimiter,
    WriteBudget,
)
from orchestrator.gateway.raw import RawStore, encode_value


class FakeEtcd:
    def __init__(self) -> None:
        self.pages = 0
        self.data: dict[str, tuple[Any, int]] = {}
        self.leases: list[tuple[int, int]] = []  # (id, ttl)
        self.revoked: set[int] = set()
        self.revision = 0

    async def grant_lease(self, ttl: int) -> int:
        self.leases.append((len(self.leases) + 1, ttl))
        return len(self.leases)

    async def put(self, key: str, value: Any, lease: int | None = None) -> int:
        if lease in self.revoked:
            raise LeaseNotFound("etcd failed: etcdserver: requested lease not found")
        self.revision += 1
        self.data[key] = (value, lease or 0)
        return self.revision

    async def get(self, key: str) -> KeyValue | None:
        if key not in self.data:
            return None
        return KeyValue(key, self.data[key][0], 1, 1, self.data[key][1])

    async def scan(self, prefix: str, start: str | None = None) -> AsyncIterator[KeyValue]:
        for k, (v, lease) in sorted(self.data.items()):
            if k.startswith(prefix) and k >= (start or prefix):
                self.pages += 1  # one key read: the real client's pages are tested against etcd
                yield KeyValue(k, v, 1, 1, lease)

    async def list_prefix(self, prefix: str, limit: int = 0) -> list[KeyValue]:
        found = [
            KeyValue(k, v, 1, 1, lease) for k, (v, lease) in sorted(self.data.items()) if k.startswith(prefix)
        ]
        return found[:limit] if limit else found


class Clock:
    now = 1000.0


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> tuple[RawStore, FakeEtcd]:
    Clock.now = 1000.0
    etcd = FakeEtcd()
    raw = RawStore(etcd, "node1", ttl=60, limiter=RateLimiter(1000, 10000))  # type: ignore[arg-type]
    raw._lease._clock = lambda: Clock.now  # the shared lease's notion of "this second"
    return raw, etcd


async def test_writes_of_one_second_share_a_lease_of_ttl_plus_one(store: tuple[RawStore, FakeEtcd]) -> None:
    raw, etcd = store
    for i in range(5):
        answer = await raw.write(f"k{i}", i, by="admin")
        assert answer == {"key": f"raw/k{i}", "ttl": 60, "revision": i + 1}
    assert etcd.leases == [(1, 61)]
    Clock.now += 1.0
    await raw.write("later", 1, by="admin")
    assert etcd.leases == [(1, 61), (2, 61)]
    stored, lease = etcd.data["/mao/v1/raw/later"]
    assert lease == 2 and stored["instance"] == "node1" and stored["by"] == "admin" and stored["value"] == 1


async def test_a_lease_lost_early_is_replaced(store: tuple[RawStore, FakeEtcd]) -> None:
    raw, etcd = store
    await raw.write("a", 1, by="admin")
    etcd.revoked.add(etcd.leases[-1][0])  # e.g. etcd restored from a snapshot
    await raw.write("b", 2, by="admin")
    assert etcd.data["/mao/v1/raw/b"][1] == 2


async def test_nothing_is_written_when_refused(store: tuple[RawStore, FakeEtcd]) -> None:
    raw, etcd = store
    with pytest.raises(PayloadTooLarge):
        await raw.write("big", "x" * 70000, by="admin")
    assert etcd.data == {} and etcd.leases == []


async def test_read_prefers_insights_and_says_where_it_looked(store: tuple[RawStore, FakeEtcd]) -> None:
    raw, etcd = store
    await raw.write("weather", "raw one", by="admin")
    assert (await raw.read("weather"))["value"] == "raw one"
    etcd.data["/mao/v1/insights/weather"] = ({"value": "insight"}, 0)
    assert (await raw.read("weather"))["value"] == "insight"
    assert (await raw.read("raw/weather"))["value"] == "raw one"
    with pytest.raises(NotFound, match="insights/nothing or raw/nothing"):
        await raw.read("nothing")


async def test_inspect_is_bounded(store: tuple[RawStore, FakeEtcd]) -> None:
    raw, etcd = store
    for i in range(MAX_INSPECT_ENTRIES + 5):
        etcd.data[f"/mao/v1/raw/many/{i:05d}"] = ({"value": i}, 0)
    etcd.data["/mao/v1/raw/many"] = ({"value": "itself"}, 0)
    etcd.data["/mao/v1/raw/manyother"] = ({"value": "not below"}, 0)
    found = await raw.inspect("raw/many")
    assert found.pop("truncated") is True
    assert len(found) == MAX_INSPECT_ENTRIES and "raw/many" in found and "raw/manyother" not in found
    assert etcd.pages <= MAX_INSPECT_ENTRIES + 1  # it stops reading once the answer is full
    small = await raw.inspect("raw/manyother")
    assert small == {"raw/manyother": {"value": "not below"}}


def deep_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_values_nested_too_deeply_are_400(store: tuple[RawStore, FakeEtcd]) -> None:
    raw, etcd = store
    await raw.write("deep", deep_list(MAX_NESTING), by="admin")
    for depth in (MAX_NESTING + 1, 950, 100_000):
        with pytest.raises(BadRequest) as refused:
            await raw.write("deeper", deep_list(depth), by="admin")
        assert refused.value.code == "invalid_value" and "nested too deeply" in refused.value.message
    assert list(etcd.data) == ["/mao/v1/raw/deep"]


def test_a_recursion_error_while_encoding_is_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever slips past the nesting bound: json.dumps raises RecursionError, never a 500.
    monkeypatch.setattr(raw_module, "nested_too_deeply", lambda value: False)
    with pytest.raises(BadRequest) as refused:
        encode_value(deep_list(100_000))
    assert refused.value.code == "invalid_value"


async def test_writers_that_find_the_lease_lost_at_once_share_one_new_lease(
    store: tuple[RawStore, FakeEtcd],
) -> None:
    raw, etcd = store
    await raw.write("first", 0, by="admin")
    etcd.revoked.add(1)
    real_grant = etcd.grant_lease

    async def slow_grant(ttl: int) -> int:
        for _ in range(5):  # the others queue behind the lock meanwhile (the fixture stops the clock)
            await asyncio.sleep(0)
        return await real_grant(ttl)

    real_put = etcd.put

    async def slow_put(key: str, value: Any, lease: int | None = None) -> int:
        await asyncio.sleep(0)  # every writer has taken the shared lease before the first hears it is lost
        return await real_put(key, value, lease)

    etcd.grant_lease = slow_grant  # type: ignore[method-assign]
    etcd.put = slow_put  # type: ignore[method-assign]
    await asyncio.gather(*(raw.write(f"k{i}", i, by="admin") for i in range(10)))
    assert [lease for lease, _ in etcd.leases] == [1, 2]
    assert {etcd.data[f"/mao/v1/raw/k{i}"][1] for i in range(10)} == {2}


def test_the_write_budget_bounds_distinct_keys() -> None:
    now = [0.0]
    budget = WriteBudget(256 * 1024, 50, clock=lambda: now[0])
    accepted = 0
    for _ in range(150):  # 150 distinct 64 KiB writes within one instant
        try:
            budget.take(64 * 1024)
            accepted += 1
        except Exception as exc:
            assert exc.status == 429 and exc.headers["Retry-After"]  # type: ignore[attr-defined]
    assert accepted == 16  # 4 s of 256 KiB
    now[0] += 1.0
    budget.take(64 * 1024)  # refilled at the rate
    small = WriteBudget(10**9, 2, clock=lambda: now[0])
    taken = 0
    for _ in range(20):
        try:
            small.take(1)
            taken += 1
        except Exception:
            pass
    assert taken == 8  # the entry budget bounds tiny writes too
