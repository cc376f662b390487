"""SharedLease on a fake etcd: shared for a while, replaced once when etcd lost it."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.federation.failover import LeaseNotFound
from orchestrator.federation.leases import SharedLease


class FakeEtcd:
    def __init__(self) -> None:
        self.granted: list[int] = []
        self.lost: set[int] = set()
        self.writes: list[tuple[str, int]] = []

    async def grant_lease(self, ttl: int) -> int:
        await asyncio.sleep(0)  # let concurrent callers pile up behind the lock
        self.granted.append(len(self.granted) + 1)
        return self.granted[-1]

    async def put(self, key: str, lease: int) -> None:
        await asyncio.sleep(0)
        if lease in self.lost:
            raise LeaseNotFound("etcd failed: etcdserver: requested lease not found")
        self.writes.append((key, lease))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts() -> tuple[SharedLease, FakeEtcd, Clock]:
    etcd, clock = FakeEtcd(), Clock()
    return SharedLease(etcd, ttl=60, reuse_for=10, clock=clock), etcd, clock  # type: ignore[arg-type]


async def test_one_lease_is_shared_for_reuse_for_seconds(parts: tuple[SharedLease, FakeEtcd, Clock]) -> None:
    lease, etcd, clock = parts
    assert await asyncio.gather(*(lease.get() for _ in range(5))) == [1] * 5  # one grant for all
    clock.now += 9.9
    assert await lease.get() == 1
    clock.now += 0.1
    assert await lease.get() == 2
    assert etcd.granted == [1, 2]


async def test_a_lost_lease_is_replaced_once_for_all_who_failed_on_it(
    parts: tuple[SharedLease, FakeEtcd, Clock],
) -> None:
    lease, etcd, _ = parts
    await lease.with_lease(lambda lease_id: etcd.put("first", lease_id))
    etcd.lost.add(1)  # etcd restored from a backup, or the lease revoked
    await asyncio.gather(*(lease.with_lease(lambda i, k=k: etcd.put(k, i)) for k in "abcd"))
    assert etcd.granted == [1, 2]  # not one replacement per writer
    assert sorted(etcd.writes) == [("a", 2), ("b", 2), ("c", 2), ("d", 2), ("first", 1)]
    # A late writer still holding the stale id gets the replacement, not a third lease.
    assert await lease.replace(1) == 2
    assert etcd.granted == [1, 2]
    # The replacement lost too: replaced again.
    etcd.lost.add(2)
    await lease.with_lease(lambda lease_id: etcd.put("e", lease_id))
    assert etcd.writes[-1] == ("e", 3)


async def test_a_write_failing_on_the_replacement_too_raises(
    parts: tuple[SharedLease, FakeEtcd, Clock],
) -> None:
    lease, etcd, _ = parts
    etcd.lost.update({1, 2})
    with pytest.raises(LeaseNotFound):
        await lease.with_lease(lambda lease_id: etcd.put("k", lease_id))
    assert etcd.granted == [1, 2]  # tried once more, not forever
