"""The ground-truth locks on their instance's session lease, against a real etcd: mutual exclusion
across instances and within one, a lease etcd forgot is never believed held, a key whose release got no
answer does not outlive the TTL, the release writes what its holder asks in the same transaction, and
an unused session gives its lease back.

Each test locks keys of its own in the session's etcd."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import EtcdUnavailable
from orchestrator.federation import lock_session
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.locks import Locks
from tests import servers


def client_of(etcd: servers.EtcdServer) -> Etcd:
    return Etcd([(etcd.host, etcd.client_port)], timeout=5)


@pytest.fixture
async def client(etcd: servers.EtcdServer) -> AsyncIterator[Etcd]:
    client = client_of(etcd)
    yield client
    await client.close()


def unique(what: str) -> str:
    return f"/mao/v1/locks/test/{what}-{uuid.uuid4().hex[:8]}"


async def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001 - a test helper
    deadline = time.monotonic() + timeout  # a bound for a hang, not a speed expectation
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_locks_share_one_lease_and_give_it_back(client: Etcd, monkeypatch: pytest.MonkeyPatch) -> None:
    locks = Locks(client, "n1", ttl=5)
    grants: list[int] = []
    grant = client.grant_lease

    async def counted(ttl: int) -> int:
        grants.append(ttl)
        return await grant(ttl)

    monkeypatch.setattr(client, "grant_lease", counted)
    key = unique("shared")
    leases = set()
    for _ in range(5):
        async with locks.hold(key, "test") as held:
            held.check()
            leases.add(held.lease)
            assert (await client.get(key)) is not None
        assert await client.get(key) is None  # released: its key is deleted at once
    assert grants == [5] and len(leases) == 1
    (lease,) = leases
    assert (await client.lease_ttl(lease))[0] > 0  # kept alive for the next lock
    await locks.close()
    assert (await client.lease_ttl(lease))[0] == -1  # revoked at close


async def test_the_lock_reads_and_the_release_writes_in_one_transaction(client: Etcd) -> None:
    locks = Locks(client, "n1", ttl=5)
    key, advance = unique("reads"), unique("advance")
    try:
        await client.put(advance, {"commit": "a" * 40})
        absent = unique("absent")
        async with locks.hold(key, "test", reads=(advance, absent)) as held:
            found = held.read[advance]
            assert found is not None and found.value == {"commit": "a" * 40}
            assert held.read[absent] is None
            assert await locks.release(held, {advance: {"commit": "b" * 40}})
            assert not await locks.release(held, {advance: {"commit": "c" * 40}})  # once only
        written, gone = await client.get(advance), await client.get(key)
        assert written is not None and written.value == {"commit": "b" * 40} and gone is None
        # A lock no longer its holder's (its key replaced behind its back) writes nothing.
        async with locks.hold(key, "test") as held:
            await client.put(key, {"instance": "other"})
            assert not await locks.release(held, {advance: {"commit": "d" * 40}})
            assert held.lost
        assert (await client.get(advance)).value == {"commit": "b" * 40}  # type: ignore[union-attr]
    finally:
        await locks.close()
        await client.delete(key)
        await client.delete(advance)


async def test_a_lease_etcd_forgot_is_never_believed_held(client: Etcd) -> None:
    locks = Locks(client, "n1", ttl=3)
    key, other = unique("forgotten"), unique("next")
    try:
        async with locks.hold(key, "test") as first:
            await client.revoke_lease(first.lease)  # etcd restored from a backup, or a revoke by hand
            # The refresh finds the lease gone: the lock counts as lost (a push under it stops).
            await wait_for(lambda: asyncio.sleep(0, first.lost), 10, "the lost lease to be noticed")
            with pytest.raises(Exception, match="lost the lease"):
                first.check()
        async with locks.hold(other, "test") as second:  # on a new session, found and held
            assert second.lease != first.lease and not second.lost
            assert (await client.get(other)).lease == second.lease  # type: ignore[union-attr]
    finally:
        await locks.close()


async def test_a_lock_taken_on_a_lease_etcd_forgot_moves_to_a_new_one(client: Etcd) -> None:
    locks = Locks(client, "n1", ttl=15)  # refreshed in 5 s: the loss is found by the take itself
    key = unique("taken-late")
    try:
        async with locks.hold(key, "test") as first:
            stale = first.lease
        await client.revoke_lease(stale)
        async with locks.hold(key, "test") as second:
            assert second.lease != stale and not second.lost
            assert (await client.get(key)).lease == second.lease  # type: ignore[union-attr]
    finally:
        await locks.close()


async def test_a_release_without_an_answer_does_not_outlive_the_ttl(
    client: Etcd, etcd: servers.EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 3
    locks = Locks(client, "n1", ttl=ttl)
    key = unique("unreleased")

    async def no_answer(*_args: object) -> bool:
        raise EtcdUnavailable("etcd is unreachable")

    async with locks.hold(key, "test") as held:
        lease = held.lease
        monkeypatch.setattr(client, "delete_putting", no_answer)
    monkeypatch.undo()
    assert held.session.ended  # its session is given up: nothing else is taken on it
    other = client_of(etcd)
    try:
        await wait_for(lambda: _absent(other, key), ttl + 2, "the unreleased key to go with its lease")
        assert (await other.lease_ttl(lease))[0] == -1
        async with locks.hold(key, "test") as next_one:
            assert next_one.lease != lease
    finally:
        await locks.close()
        await other.close()


async def _absent(client: Etcd, key: str) -> bool:
    return await client.get(key) is None


async def test_an_unused_session_gives_its_lease_back(client: Etcd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_session, "IDLE", 0.2)
    monkeypatch.setattr("orchestrator.federation.locks.IDLE", 0.2)
    locks = Locks(client, "n1", ttl=2)  # looked at every 0.67 s
    async with locks.hold(unique("idle"), "test") as held:
        lease = held.lease
    try:
        await wait_for(lambda: _revoked(client, lease), 10, "the idle session's lease to be revoked")
    finally:
        await locks.close()


async def _revoked(client: Etcd, lease: int) -> bool:
    return (await client.lease_ttl(lease))[0] == -1


# Each instance's holds: (which key, how long it keeps it in ms); all run at once.
PLANS = st.lists(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=1, max_size=4),
    min_size=2,
    max_size=3,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=PLANS)
def test_one_holder_at_a_time_across_instances_and_within_one(
    etcd: servers.EtcdServer, plans: list[list[tuple[int, int]]]
) -> None:
    async def scenario() -> None:
        clients = [client_of(etcd) for _ in plans]
        instances = [Locks(c, f"n{i}", ttl=5, wait=60) for i, c in enumerate(clients)]
        keys = [unique("a"), unique("b")]
        holding: dict[str, int] = {key: 0 for key in keys}
        most: dict[str, int] = {key: 0 for key in keys}

        async def hold(locks: Locks, key: str, ms: int) -> None:
            async with locks.hold(key, "test") as held:
                held.check()
                holding[key] += 1
                most[key] = max(most[key], holding[key])
                await asyncio.sleep(ms / 1000)
                holding[key] -= 1

        try:
            # Every hold of an instance at once, too: two tasks of one instance on one key share its
            # lease, and only one of them may hold it.
            await asyncio.gather(
                *(
                    hold(locks, keys[k], ms)
                    for locks, plan in zip(instances, plans, strict=True)
                    for k, ms in plan
                )
            )
        finally:
            for locks in instances:
                await locks.close()
        check = clients[0]
        assert [await check.get(key) for key in keys] == [None, None]
        for c in clients:
            await c.close()
        assert all(n <= 1 for n in most.values()), most

    asyncio.run(scenario())
