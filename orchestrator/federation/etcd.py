"""The one door to etcd: aetcd (asyncio) behind endpoint failover and error translation.

Contracts:
- Every method raises ``EtcdUnavailable`` (HTTP 503) when no endpoint answers in time; callers never
  see aetcd or gRPC exceptions.
- Reads are linearizable (the default in etcd v3), so a value written on one instance is seen by the
  next read on any other.
- ``create`` and ``update`` are compare-and-set: ``create`` writes only an absent key, ``update`` retries
  a read-modify-write until no one else wrote the key in between. Plain ``put`` overwrites.
- Keys bound to a lease vanish when the lease is revoked or expires (heartbeats, locks).
- Every request carries etcd's "require leader" flag: a member that lost the quorum answers at once
  with "no leader" instead of letting the request time out, and the next endpoint is tried.
- Watches (``watch_prefix``) end, or raise ``EtcdUnavailable``, when their stream breaks, and raise
  ``HistoryCompacted`` when the revision asked for is gone; callers re-read and watch again from the
  revision they read (the usual list-then-watch pattern, ``federation.watch.PrefixWatch``).
- Callbacks given to ``on_available`` run when etcd answers again after being unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.utils
import grpc

from ..errors import EtcdUnavailable
from ..urls import split_url
from .failover import CHANNEL_OPTIONS, FailoverClient, LeaseNotFound, close_quietly, short
from .tls import make_client

log = logging.getLogger(__name__)

__all__ = ["DELETE", "Etcd", "HistoryCompacted", "KeyValue", "LeaseNotFound", "WatchEvent"]

# Sentinel an ``update`` function returns to delete the key.
DELETE = object()


class HistoryCompacted(Exception):
    """A watch asked for revisions etcd has compacted away: list the keys again, then watch."""

    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"etcd history was compacted up to revision {compacted_revision}")
        self.compacted_revision = compacted_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: Any
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: Any  # None for a DELETE
    revision: int
    lease: int = 0


class Etcd(FailoverClient):
    # -- key-value ------------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        result = await self._call(lambda c: c.get(key.encode()))
        return _decode(result) if result is not None else None

    async def list_prefix(
        self, prefix: str, *, limit: int = 0, newest_first: bool = False, before: str | None = None
    ) -> list[KeyValue]:
        """Keys under ``prefix`` in key order (reversed with ``newest_first``), at most ``limit``
        (0: all), only those sorting before the key ``before`` when given."""
        kvs, _ = await self.list_with_revision(prefix, limit=limit, newest_first=newest_first, before=before)
        return kvs

    async def list_with_revision(
        self, prefix: str, *, limit: int = 0, newest_first: bool = False, before: str | None = None
    ) -> tuple[list[KeyValue], int]:
        """``list`` plus the store revision it was read at (to watch from the next one)."""
        start = prefix.encode()
        request = aetcd.rpc.RangeRequest(
            key=start,
            range_end=before.encode() if before else aetcd.utils.prefix_range_end(start),
            limit=limit,
            sort_order=aetcd.rpc.RangeRequest.DESCEND if newest_first else aetcd.rpc.RangeRequest.ASCEND,
            sort_target=aetcd.rpc.RangeRequest.KEY,
        )

        async def op(c: aetcd.Client) -> tuple[list[KeyValue], int]:
            await c.connect()
            response = await c.kvstub.Range(request, timeout=self.timeout, metadata=c.metadata)
            return [_decode(kv) for kv in response.kvs], int(response.header.revision)

        return await self._call(op)

    async def list_page(self, prefix: str, start: str, limit: int) -> list[KeyValue]:
        """At most ``limit`` keys under ``prefix`` from the key ``start`` on, in key order: pages of a
        prefix too large for one answer (etcd's gRPC answers are bounded, 4 MiB by default)."""
        request = aetcd.rpc.RangeRequest(
            key=start.encode(),
            range_end=aetcd.utils.prefix_range_end(prefix.encode()),
            limit=limit,
            sort_order=aetcd.rpc.RangeRequest.ASCEND,
            sort_target=aetcd.rpc.RangeRequest.KEY,
        )

        async def op(c: aetcd.Client) -> list[KeyValue]:
            await c.connect()
            response = await c.kvstub.Range(request, timeout=self.timeout, metadata=c.metadata)
            return [_decode(kv) for kv in response.kvs]

        return await self._call(op)

    async def put(self, key: str, value: Any, lease: int | None = None) -> int:
        """Write ``key``; returns the store revision of the write (its ``mod_revision``)."""
        result = await self._call(lambda c: c.put(key.encode(), _encode(value), lease=lease))
        return int(result.header.revision)

    async def create(self, key: str, value: Any, lease: int | None = None) -> bool:
        """Write ``key`` only if it does not exist; True when written.

        With a lease, a key that already holds exactly ``value`` on that same lease also counts as
        written: it is our own earlier attempt whose answer was lost when an endpoint failed over."""
        encoded = _encode(value)

        async def op(c: aetcd.Client) -> bool:
            ok, responses = await c.transaction(
                compare=[c.transactions.create(key.encode()) == 0],
                success=[c.transactions.put(key.encode(), encoded, lease=lease)],
                failure=[c.transactions.get(key.encode())],
            )
            if ok:
                return True
            existing = [kv for _, kv in responses[0]] if responses else []
            return (
                bool(lease) and bool(existing) and existing[0].lease == lease and existing[0].value == encoded
            )

        return await self._call(op)

    async def delete(self, key: str) -> bool:
        result = await self._call(lambda c: c.delete(key.encode()))
        return bool(result and result.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many were deleted."""
        result = await self._call(lambda c: c.delete_prefix(prefix.encode()))
        return int(result.deleted) if result else 0

    async def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete ``key`` only if nobody changed it since ``mod_revision``."""

        async def op(c: aetcd.Client) -> bool:
            ok, _ = await c.transaction(
                compare=[c.transactions.mod(key.encode()) == mod_revision],
                success=[c.transactions.delete(key.encode())],
                failure=[],
            )
            return bool(ok)

        return await self._call(op)

    async def put_if(self, key: str, value: Any, mod_revision: int, lease: int | None = None) -> bool:
        """Write ``key`` only if its mod revision is still ``mod_revision`` (0: only if absent)."""

        async def op(c: aetcd.Client) -> bool:
            ok, _ = await c.transaction(
                compare=[c.transactions.mod(key.encode()) == mod_revision],
                success=[c.transactions.put(key.encode(), _encode(value), lease=lease)],
                failure=[],
            )
            return bool(ok)

        return await self._call(op)

    async def update(self, key: str, change: Callable[[Any | None], Any], attempts: int = 20) -> Any:
        """Compare-and-set read-modify-write. ``change`` gets the current value (None if absent) and
        returns the new value, or ``DELETE``; it may run several times, so it must be pure."""
        for _ in range(attempts):
            current = await self.get(key)
            new = change(current.value if current else None)
            revision = current.mod_revision if current else 0
            if new is DELETE:
                if current is None or await self.delete_if(key, revision):
                    return None
            elif await self.put_if(key, new, revision):
                return new
            await asyncio.sleep(0.01)
        raise EtcdUnavailable(f"etcd key {key} kept changing under concurrent writers; try again")

    async def update_many(
        self, changes: dict[str, Callable[[Any | None], Any]], attempts: int = 20
    ) -> dict[str, Any]:
        """``update`` for several keys in one transaction: all are written or none is."""
        for _ in range(attempts):
            currents = {key: await self.get(key) for key in changes}
            new_values = {
                key: change(kv.value if (kv := currents[key]) else None) for key, change in changes.items()
            }

            async def op(
                c: aetcd.Client,
                currents: dict[str, KeyValue | None] = currents,
                new_values: dict[str, Any] = new_values,
            ) -> bool:
                compare = [
                    c.transactions.mod(key.encode()) == (kv.mod_revision if kv else 0)
                    for key, kv in currents.items()
                ]
                success = [
                    c.transactions.delete(key.encode())
                    if value is DELETE
                    else c.transactions.put(key.encode(), _encode(value))
                    for key, value in new_values.items()
                ]
                ok, _ = await c.transaction(compare=compare, success=success, failure=[])
                return bool(ok)

            if await self._call(op):
                return {key: (None if value is DELETE else value) for key, value in new_values.items()}
            await asyncio.sleep(0.01)
        raise EtcdUnavailable("etcd keys kept changing under concurrent writers; try again")

    # -- leases ---------------------------------------------------------------------------------
    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl))
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        """Refresh a lease; returns the remaining TTL, 0 when the lease has already expired."""
        reply = await self._call(lambda c: c.refresh_lease(lease_id))
        return int(reply.TTL) if reply is not None else 0

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(lambda c: c.revoke_lease(lease_id))

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

    # -- watches --------------------------------------------------------------------------------
    async def watch_prefix(
        self, prefix: str, start_revision: int, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from ``start_revision`` on. Ends quietly when the connection was
        replaced (watch again); raises ``HistoryCompacted`` when ``start_revision`` is older than
        etcd's history (re-read, then watch), and ``EtcdUnavailable`` when the endpoint stops
        answering (the next call tries the next one). ``on_open`` is called once etcd has created
        the watch (so its caller knows etcd answered, even if no event ever comes)."""
        client = await self._get_client()
        try:
            watch = await client.watch_prefix(prefix.encode(), start_revision=start_revision)
        except aetcd.exceptions.RevisionCompactedError as exc:
            raise HistoryCompacted(exc.compacted_revision) from exc
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError, TimeoutError) as exc:
            await self._next_endpoint(client)
            raise EtcdUnavailable(f"could not watch {prefix} on {self.endpoint}: {short(exc)}") from exc
        if on_open is not None:
            on_open()
        try:
            async for event in watch:
                kv = _decode(event.kv)
                yield WatchEvent(
                    kind=str(event.kind),
                    key=kv.key,
                    value=kv.value if event.kind == "PUT" else None,
                    revision=kv.mod_revision,
                    lease=kv.lease,
                )
        except aetcd.exceptions.RevisionCompactedError as exc:
            raise HistoryCompacted(exc.compacted_revision) from exc
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            await self._next_endpoint(client)
            raise EtcdUnavailable(f"the watch on {prefix} broke: {short(exc)}") from exc
        finally:
            # Cancelling queues a request on the stream; a dead stream must not hang us here.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(watch.cancel()), 1)


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _decode(kv: Any) -> KeyValue:
    raw = kv.value
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        # A key written by something else (the prototype stored Python repr): keep it readable.
        value = raw.decode(errors="replace")
    return KeyValue(
        key=kv.key.decode(),
        value=value,
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
        lease=kv.lease,
    )
