"""etcd's maintenance and membership calls: the store's revision and compaction, its space and
alarms, the cluster's status and members.

Unlike the key-value calls (``etcd.Etcd``) some of these need no quorum: a status call says a member
runs, not that the cluster is healthy (``check`` proves a quorum with a linearizable read).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rpc
import grpc

from ..urls import split_url
from .failover import CHANNEL_OPTIONS, FailoverClient, close_quietly
from .tls import make_client


class EtcdMaintenance(FailoverClient):
    """The failover client's maintenance and membership calls (``Etcd`` adds the key-value ones)."""

    # -- history --------------------------------------------------------------------------------
    async def revision(self) -> int:
        """The store's current revision (a count-only read: no key is sent back)."""
        request = aetcd.rpc.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)

        async def op(c: aetcd.Client) -> int:
            await c.connect()
            response = await c.kvstub.Range(request, timeout=self.timeout, metadata=c.metadata)
            return int(response.header.revision)

        return await self._call(op)

    async def compact(self, revision: int) -> bool:
        """Drop the history before ``revision``; False when it already was (another instance
        compacted as far or further)."""

        async def op(c: aetcd.Client) -> bool:
            try:
                await c.compact(revision)
            except aetcd.exceptions.RevisionCompactedError:
                return False
            return True

        return await self._call(op)

    async def db_size(self) -> int:
        """Bytes of the answering member's database file (what compaction and defragmentation shrink)."""
        status = await self._call(lambda c: c.status())
        return int(status.db_size)

    async def space(self) -> tuple[int, int]:
        """``(db_size, db_size_in_use)`` in bytes of the answering member: the file (what etcd's
        quota counts) and what of it holds data (the rest is free pages compaction left, reused by
        later writes, given back by a defragmentation)."""

        async def op(c: aetcd.Client) -> tuple[int, int]:
            await c.connect()
            status = await c.maintenancestub.Status(
                aetcd.rpc.StatusRequest(), timeout=self.timeout, metadata=c.metadata
            )
            return int(status.dbSize), int(status.dbSizeInUse or status.dbSize)

        return await self._call(op)

    async def alarms(self) -> list[str]:
        """The alarms raised in the cluster (``NOSPACE``: the quota is reached, etcd refuses writes
        until an operator disarms it; ``CORRUPT``), one name per alarm and member."""

        async def op(c: aetcd.Client) -> list[str]:
            await c.connect()
            request = aetcd.rpc.AlarmRequest(
                action=aetcd.rpc.AlarmRequest.GET, memberID=0, alarm=aetcd.rpc.NONE
            )
            response = await c.maintenancestub.Alarm(request, timeout=self.timeout, metadata=c.metadata)
            return [aetcd.rpc.AlarmType.Name(a.alarm) for a in response.alarms]

        return await self._call(op)

    # -- cluster --------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        status = await self._call(lambda c: c.status())
        leader = status.leader.name if status.leader is not None else None
        return {"version": status.version, "leader": leader, "raft_term": status.raft_term}

    async def check(self) -> None:
        """Prove a quorum answers: a linearizable read needs a majority, a status call does not."""
        await self._call(lambda c: c.get(b"/mao/v1/health"))

    async def members(self) -> list[dict[str, Any]]:
        async def op(c: aetcd.Client) -> list[dict[str, Any]]:
            return [
                {
                    "id": m.id,
                    "name": m.name,
                    "peer_urls": list(m.peer_urls),
                    "client_urls": list(m.client_urls),
                }
                async for m in c.members()
            ]

        return await self._call(op)

    async def add_member(self, peer_url: str) -> dict[str, Any]:
        """Add a (not yet started) member to the cluster; etcd assigns its id."""
        member = await self._call(lambda c: c.add_member([peer_url]))
        return {"id": member.id, "name": member.name, "peer_urls": list(member.peer_urls)}

    async def remove_member(self, member_id: int) -> None:
        await self._call(lambda c: c.remove_member(member_id))

    async def member_answers(self, client_url: str, timeout: float = 1.0) -> bool:
        """Whether the member at ``client_url`` answers a status call within ``timeout`` seconds.
        A status call needs no quorum: it says the member runs, not that the cluster is healthy."""
        parts = split_url(client_url)
        if parts is None or not parts.hostname or not parts.port:
            return False
        # Without the require-leader flag: a running member answers even while it has no leader.
        client = make_client(parts.hostname, parts.port, timeout, CHANNEL_OPTIONS, self.tls)
        try:
            await asyncio.wait_for(client.connect(), timeout)
            await asyncio.wait_for(
                client.maintenancestub.Status(aetcd.rpc.StatusRequest(), timeout=timeout), timeout + 0.5
            )
            return True
        except (TimeoutError, grpc.aio.AioRpcError, aetcd.exceptions.ClientError, OSError):
            return False
        finally:
            await close_quietly(client)
