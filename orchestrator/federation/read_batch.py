"""Registration reads asked at the same moment, sent to etcd as one transaction.

A run's check reads each registration its pipeline uses, a step its output dataset, input dataset
and tool, parallel steps theirs: side by side (``asyncio.gather``), one ``get`` each. Each ``get`` is
its own gRPC call, and their cost adds up on a busy event loop even though they wait together.
``ReadBatch.get`` collects the keys asked for in one turn of the event loop and reads them all with
``Etcd.get_many`` (one transaction, ``federation/etcd.py``), so callers keep asking one key at a time.

What each caller gets is what its own ``get`` would have returned: a linearizable read made after it
asked (the transaction is sent on the next turn of the loop, once every read asked in this one has
joined it), the key's value or None, and the same error when etcd does not answer. A caller
cancelled while it waits leaves the read to the others.
"""

from __future__ import annotations

import asyncio

from .answers import KeyValue
from .etcd import Etcd


class _Pending:
    """The keys asked for in one turn of the event loop, and the one read of them all."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.read: asyncio.Task[dict[str, KeyValue | None]] | None = None

    def joinable(self) -> bool:
        """Not sent yet, and on this event loop: a read cancelled before it was sent (its loop
        shutting down) or left by a loop that ended is no batch to join."""
        read = self.read
        return read is not None and not read.done() and read.get_loop() is asyncio.get_running_loop()


class ReadBatch:
    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._open: _Pending | None = None
        self._under_way: set[asyncio.Task[dict[str, KeyValue | None]]] = set()  # kept until done

    async def get(self, key: str) -> KeyValue | None:
        """``Etcd.get``, read together with the other keys asked for in this turn of the loop."""
        pending = self._open
        if pending is None or not pending.joinable():
            pending = self._open = _Pending()
            # A task's first step runs in the loop's next turn, after every step already scheduled
            # in this one: the reads started beside this one (a gather's other tasks) join it.
            read = asyncio.create_task(self._send(pending))
            pending.read = read
            self._under_way.add(read)
            read.add_done_callback(self._done)
        pending.keys.append(key)
        assert pending.read is not None
        found = await asyncio.shield(pending.read)
        return found[key]

    async def _send(self, pending: _Pending) -> dict[str, KeyValue | None]:
        if self._open is pending:
            self._open = None  # a key asked for from now on goes in the next transaction
        return await self.etcd.get_many(pending.keys)

    def _done(self, read: asyncio.Task[dict[str, KeyValue | None]]) -> None:
        self._under_way.discard(read)
        if not read.cancelled():
            read.exception()  # retrieved: every caller may have been cancelled meanwhile
