"""Registration reads asked side by side go to a real etcd as one transaction (``Etcd.get_many``,
``federation/read_batch.py``), and each caller gets exactly what its own ``get`` would have: the value,
None for an absent key, the ``problem`` of one that cannot be decoded, whatever mix of keys and
repeats hypothesis asks for, in any order. More keys than one transaction may hold, answers larger
than one gRPC message, and callers cancelled while they wait change nothing for the others.

Each example writes under a prefix of its own in the session's etcd (and removes it again).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aetcd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.federation.answers import KeyValue
from orchestrator.federation.etcd import TXN_READS, Etcd
from orchestrator.federation.read_batch import ReadBatch
from tests import servers

# What a key holds: nothing, a value, or bytes nobody can decode.
STATES = st.sampled_from(["absent", "value", "undecodable"])


class Counting(Etcd):
    """The session's etcd, counting the round trips of ``get_many`` and the single reads."""

    transactions = 0
    gets = 0

    async def _reads(self, keys: Sequence[str]) -> Any:
        self.transactions += 1
        return await super()._reads(keys)

    async def get(self, key: str) -> KeyValue | None:
        self.gets += 1
        return await super().get(key)


@pytest.fixture
async def client(etcd: servers.EtcdServer) -> AsyncIterator[Counting]:
    client = Counting([(etcd.host, etcd.client_port)], timeout=5)
    yield client
    await client.close()


@pytest.fixture
async def prefix(etcd: servers.EtcdServer) -> AsyncIterator[str]:
    """A prefix of the test's own, removed again at its end."""
    name = f"/test/batch-{uuid.uuid4().hex[:8]}/"
    yield name
    await _clear(etcd, name)


async def _fill(etcd: servers.EtcdServer, prefix: str, states: list[str]) -> list[str]:
    keys = [f"{prefix}{i}" for i in range(len(states))]
    async with aetcd.Client(etcd.host, etcd.client_port) as raw:
        for key, state in zip(keys, states, strict=True):
            if state == "value":
                await raw.put(key.encode(), f'{{"name": "{key}", "n": {len(key)}}}'.encode())
            elif state == "undecodable":
                await raw.put(key.encode(), b"{'not': json}")
    return keys


async def _clear(etcd: servers.EtcdServer, prefix: str) -> None:
    async with aetcd.Client(etcd.host, etcd.client_port) as raw:
        await raw.delete_prefix(prefix.encode())


def _same(got: KeyValue | None, alone: KeyValue | None) -> bool:
    if got is None or alone is None:
        return got is alone
    return (got.key, got.value, got.mod_revision, got.problem is None) == (
        alone.key,
        alone.value,
        alone.mod_revision,
        alone.problem is None,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=st.lists(STATES, min_size=1, max_size=8), data=st.data())
def test_reads_asked_together_are_one_transaction_with_each_answer_its_own(
    etcd: servers.EtcdServer, states: list[str], data: st.DataObject
) -> None:
    asked = data.draw(st.lists(st.integers(0, len(states) - 1), min_size=1, max_size=12))

    async def scenario() -> None:
        prefix = f"/test/batch-{uuid.uuid4().hex[:8]}/"
        client = Counting([(etcd.host, etcd.client_port)], timeout=5)
        try:
            keys = await _fill(etcd, prefix, states)
            batch = ReadBatch(client)
            together = await asyncio.gather(*(batch.get(keys[i]) for i in asked))
            assert client.transactions == 1
            for i, got in zip(asked, together, strict=True):
                alone = await client.get(keys[i])
                assert _same(got, alone), (states[i], got, alone)
                assert (got is None) == (states[i] == "absent")
                assert got is None or (got.problem is not None) == (states[i] == "undecodable")
            # A read asked after the transaction left is a transaction of its own, made after it.
            await client.put(keys[asked[0]], {"name": "changed"})
            again = await batch.get(keys[asked[0]])
            assert again is not None and again.value == {"name": "changed"}
            assert client.transactions == 2
        finally:
            await _clear(etcd, prefix)
            await client.close()

    asyncio.run(scenario())


async def test_more_keys_than_one_transaction_holds(
    client: Counting, etcd: servers.EtcdServer, prefix: str
) -> None:
    states = ["value", "absent"] * TXN_READS  # twice the keys one transaction may read
    keys = await _fill(etcd, prefix, states)
    found = await client.get_many(keys)
    assert (client.transactions, client.gets) == (2, 0)
    assert [found[k] is None for k in keys] == [s == "absent" for s in states]


async def test_an_answer_larger_than_one_grpc_message_is_read_key_by_key(
    client: Counting, etcd: servers.EtcdServer, prefix: str
) -> None:
    """Five values of 1 MiB: one answer would be 5 MiB, more than gRPC takes by default (4 MiB)."""
    big = "x" * (1024 * 1024)
    keys = [f"{prefix}{i}" for i in range(5)]
    for key in keys:
        await client.put(key, {"v": big})
    found = await client.get_many([*keys, f"{prefix}none"])
    assert [kv.value == {"v": big} if kv else None for kv in found.values()] == [True] * 5 + [None]
    assert (client.transactions, client.gets) == (1, 6)  # refused for its size, then key by key


async def test_a_caller_cancelled_while_it_waits_leaves_the_read_to_the_others(
    client: Counting, etcd: servers.EtcdServer, prefix: str
) -> None:
    keys = await _fill(etcd, prefix, ["value", "value", "absent"])
    batch = ReadBatch(client)
    reads = [asyncio.create_task(batch.get(key)) for key in keys]
    await asyncio.sleep(0)  # every read asked; the transaction not yet answered
    reads[0].cancel()
    done = await asyncio.gather(*reads, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert done[1] is not None and done[1].value["name"] == keys[1]  # type: ignore[union-attr]
    assert done[2] is None
    assert client.transactions == 1


async def test_a_transaction_cancelled_before_it_was_sent_is_not_joined(
    client: Counting, etcd: servers.EtcdServer, prefix: str
) -> None:
    """As an event loop shutting down cancels it: the next read sends a transaction of its own
    rather than waiting on one that will never answer."""
    keys = await _fill(etcd, prefix, ["value"])
    batch = ReadBatch(client)
    first = asyncio.create_task(batch.get(keys[0]))
    await asyncio.sleep(0)  # asked; its transaction is to be sent in the next turn of the loop
    unsent = batch._open
    assert unsent is not None and unsent.read is not None
    unsent.read.cancel()
    assert isinstance((await asyncio.gather(first, return_exceptions=True))[0], asyncio.CancelledError)
    found = await asyncio.wait_for(batch.get(keys[0]), 10)
    assert found is not None and found.value["name"] == keys[0]
    assert client.transactions == 1  # the cancelled one never reached etcd
