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

The maintenance and membership calls are ``maintenance.EtcdMaintenance``, paged range reads
``paging``, the values handed back ``answers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rpc
import grpc

from ..errors import EtcdUnavailable
from .answers import HistoryCompacted, KeyValue, WatchEvent, WatchTooLarge, decode_kv, too_large
from .failover import short
from .maintenance import EtcdMaintenance
from .paging import COMPACTED, TOO_LARGE, Pages, SnapshotCompacted
from .values import encode_value, warn_once

log = logging.getLogger(__name__)

__all__ = ["DELETE", "Etcd"]

# Sentinel an ``update`` function returns to delete the key.
DELETE = object()
# Operations in one transaction of ``get_many``: etcd refuses more than its --max-txn-ops (128 by default).
TXN_READS = 64


class Etcd(EtcdMaintenance):
    """The key-value, lease and watch calls (``EtcdMaintenance`` adds maintenance and membership)."""

    # -- key-value ------------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        """The key's value; one that cannot be decoded comes back with ``problem`` set (and said in
        the log once), so that the caller can name the key."""
        response = await self._range(key.encode(), b"", limit=0)
        if response is TOO_LARGE:
            problem = "larger than one etcd answer may be"
            warn_once(key, 0, problem)
            return KeyValue(key, None, 0, 0, 0, problem)
        if not response.kvs:
            return None
        kv = decode_kv(response.kvs[0])
        if kv is not None and kv.problem:
            warn_once(kv.key, kv.mod_revision, kv.problem)
        return kv

    async def get_many(self, keys: Sequence[str]) -> dict[str, KeyValue | None]:
        """``get`` of several keys in one round trip: one read-only transaction of range reads (at
        most ``TXN_READS`` keys each, etcd's own bound on a transaction's operations), each at one
        revision and linearizable like ``get``. A transaction whose answer does not fit one gRPC
        message is read key by key (``get``: a value too large comes back with its ``problem``)."""
        found: dict[str, KeyValue | None] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), TXN_READS):
            chunk = wanted[start : start + TXN_READS]
            answer = await self._reads(chunk)
            if answer is TOO_LARGE:
                for key in chunk:
                    found[key] = await self.get(key)
                continue
            for key, response in zip(chunk, answer.responses, strict=True):
                kvs = response.response_range.kvs
                kv = decode_kv(kvs[0]) if kvs else None
                if kv is not None and kv.problem:
                    warn_once(kv.key, kv.mod_revision, kv.problem)
                found[key] = kv
        return found

    async def _reads(self, keys: Sequence[str]) -> Any:
        """One transaction of a range read per key (no compare: it always takes its success
        branch), or ``TOO_LARGE``."""
        request = aetcd.rpc.TxnRequest(
            success=[aetcd.rpc.RequestOp(request_range=aetcd.rpc.RangeRequest(key=k.encode())) for k in keys]
        )
        return await self._read_call(lambda c: c.kvstub.Txn(request, timeout=self.timeout, metadata=c.metadata))

    async def list_prefix(
        self, prefix: str, *, limit: int = 0, newest_first: bool = False, before: str | None = None
    ) -> list[KeyValue]:
        """Keys under ``prefix`` in key order (reversed with ``newest_first``), at most ``limit``
        (0: all), only those sorting before the key ``before`` when given. Values that cannot be
        decoded are left out (said once in the log)."""
        kvs, _ = await self.list_with_revision(prefix, limit=limit, newest_first=newest_first, before=before)
        return kvs

    async def list_with_revision(
        self, prefix: str, *, limit: int = 0, newest_first: bool = False, before: str | None = None
    ) -> tuple[list[KeyValue], int]:
        """``list`` plus the store revision it was read at (to watch from the next one). Read in
        pages bounded by bytes (``PAGE_BYTES``) and count, all at that one revision: no answer from
        etcd has to fit the whole prefix."""
        for _ in range(5):
            found: list[KeyValue] = []
            pages = Pages(
                self._range, prefix, limit=limit, newest_first=newest_first, before=before, snapshot=True
            )
            try:
                async for kv in pages:
                    found.append(kv)
                return found, pages.revision
            except SnapshotCompacted:
                continue  # compacted between two pages: read the whole prefix again
        raise EtcdUnavailable(f"etcd's history kept being compacted while {prefix} was read; try again")

    async def scan(self, prefix: str, start: str | None = None) -> AsyncIterator[KeyValue]:
        """Every decodable key under ``prefix`` from the key ``start`` on, in key order, read page by
        page as the caller goes (``/inspect`` stops early): each page at the store's revision of the
        moment, so a long scan sees keys written meanwhile."""
        async for kv in Pages(self._range, prefix, start=start):
            yield kv

    async def list_page(self, prefix: str, start: str, limit: int) -> list[KeyValue]:
        """At most ``limit`` keys under ``prefix`` from the key ``start`` on, in key order."""
        found = []
        async for kv in Pages(self._range, prefix, start=start, limit=limit):
            found.append(kv)
        return found

    async def _range(
        self,
        key: bytes,
        range_end: bytes,
        *,
        limit: int,
        revision: int = 0,
        descend: bool = False,
        keys_only: bool = False,
    ) -> Any:
        """One Range call: its answer, ``TOO_LARGE`` when it does not fit one gRPC message, or
        ``COMPACTED`` when ``revision`` is gone."""
        request = aetcd.rpc.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            sort_order=aetcd.rpc.RangeRequest.DESCEND if descend else aetcd.rpc.RangeRequest.ASCEND,
            sort_target=aetcd.rpc.RangeRequest.KEY,
        )

        return await self._read_call(lambda c: c.kvstub.Range(request, timeout=self.timeout, metadata=c.metadata))

    async def _read_call(self, call: Callable[[aetcd.Client], Awaitable[Any]]) -> Any:
        """One read of etcd's KV service, made straight on the client's stub: its answer,
        ``TOO_LARGE`` when it does not fit one gRPC message, or ``COMPACTED`` when the revision it
        asked for is gone."""

        async def op(c: aetcd.Client) -> Any:
            await c.connect()
            try:
                return await call(c)
            except grpc.aio.AioRpcError as exc:
                if too_large(exc):
                    return TOO_LARGE
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (exc.details() or ""):
                    return COMPACTED
                raise

        return await self._call(op)

    async def put(self, key: str, value: Any, lease: int | None = None) -> int:
        """Write ``key``; returns the store revision of the write (its ``mod_revision``)."""
        result = await self._call(lambda c: c.put(key.encode(), encode_value(value), lease=lease))
        return int(result.header.revision)

    async def create(self, key: str, value: Any, lease: int | None = None) -> bool:
        """Write ``key`` only if it does not exist; True when written.

        With a lease, a key that already holds exactly ``value`` on that same lease also counts as
        written: it is our own earlier attempt whose answer was lost when an endpoint failed over."""
        encoded = encode_value(value)

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

    async def create_reading(
        self, key: str, value: Any, lease: int, reads: Sequence[str] = ()
    ) -> tuple[bool, dict[str, KeyValue | None]]:
        """``create`` on ``lease``, and in the same transaction the keys ``reads``, as they are at the
        revision the key was created (or found already there): one round trip for both."""
        encoded = encode_value(value)
        wanted = [name.encode() for name in reads]

        async def op(c: aetcd.Client) -> tuple[bool, dict[str, KeyValue | None]]:
            gets = [c.transactions.get(name) for name in wanted]
            ok, responses = await c.transaction(
                compare=[c.transactions.create(key.encode()) == 0],
                success=[c.transactions.put(key.encode(), encoded, lease=lease), *gets],
                failure=[c.transactions.get(key.encode()), *gets],
            )
            read = {name: _first(got) for name, got in zip(reads, responses[1:], strict=True)}
            if ok:
                return True, read
            existing = [kv for _, kv in responses[0]]
            # Our own earlier attempt whose answer was lost when an endpoint failed over (``create``).
            ours = bool(existing) and existing[0].lease == lease and existing[0].value == encoded
            return ours, read

        return await self._call(op)

    async def delete_putting(self, key: str, value: Any, puts: Mapping[str, Any]) -> bool:
        """Delete ``key`` only while it holds exactly ``value``, and write ``puts`` in the same
        transaction (all at one revision); False, and nothing written, when ``key`` holds anything
        else or nothing."""
        encoded = encode_value(value)
        writes = [(name.encode(), encode_value(new)) for name, new in puts.items()]

        async def op(c: aetcd.Client) -> bool:
            ok, _ = await c.transaction(
                compare=[c.transactions.value(key.encode()) == encoded],
                success=[
                    c.transactions.delete(key.encode()),
                    *(c.transactions.put(name, new) for name, new in writes),
                ],
                failure=[],
            )
            return bool(ok)

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
                success=[c.transactions.put(key.encode(), encode_value(value), lease=lease)],
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
                    else c.transactions.put(key.encode(), encode_value(value))
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

    async def lease_ttl(self, lease_id: int) -> tuple[int, int]:
        """``(remaining, granted)`` seconds of a lease; remaining is -1 when it does not exist."""
        reply = await self._call(lambda c: c.get_lease_info(lease_id, keys=False))
        return int(reply.TTL), int(reply.grantedTTL)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(lambda c: c.revoke_lease(lease_id))

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
                kv = decode_kv(event.kv)
                if kv is None:
                    continue
                if event.kind == "PUT" and kv.problem:
                    # Skipped, not handed over: the watch moves on past it (and past it again if
                    # it is delivered again after a resumed watch, said once).
                    warn_once(kv.key, kv.mod_revision, kv.problem)
                    continue
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
            if too_large(exc):
                # Watching again from the same revision would meet the same answer for ever.
                raise WatchTooLarge(short(exc)) from exc
            await self._next_endpoint(client)
            raise EtcdUnavailable(f"the watch on {prefix} broke: {short(exc)}") from exc
        finally:
            # Cancelling queues a request on the stream; a dead stream must not hang us here.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(watch.cancel()), 1)


def _first(got: Any) -> KeyValue | None:
    """The key-value a transaction's single-key get found (None: the key is absent)."""
    return decode_kv(got[0][1]) if got else None
