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
from .values import decode_key, decode_value, encode_value, warn_once

log = logging.getLogger(__name__)

__all__ = ["DELETE", "Etcd", "HistoryCompacted", "KeyValue", "LeaseNotFound", "WatchEvent", "WatchTooLarge"]

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
    # Why ``value`` (then None) could not be decoded (``values.decode_value``); listings and watches
    # never hand such a value over, a single ``get`` does, so that its caller can name the key.
    problem: str | None = None


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: Any  # None for a DELETE
    revision: int
    lease: int = 0


class WatchTooLarge(HistoryCompacted):
    """The changes a watch would deliver at once do not fit in one gRPC message (a watch resumed far
    back over large values): list the keys again (in pages), then watch from there."""

    def __init__(self, detail: str) -> None:
        Exception.__init__(self, f"the changes to catch up on are too large for one answer ({detail})")
        self.compacted_revision = 0


# Range answers are read in pages of at most PAGE_KEYS keys, sized from the values seen so far so
# that a page carries about PAGE_BYTES; a page etcd cannot send in one gRPC message (4 MiB by
# default) is asked for again in smaller pieces, down to one key.
PAGE_BYTES = 1024 * 1024
PAGE_KEYS = 512
FIRST_PAGE = 64
_TOO_LARGE = object()
_COMPACTED = object()


class Etcd(FailoverClient):
    # -- key-value ------------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        """The key's value; one that cannot be decoded comes back with ``problem`` set (and said in
        the log once), so that the caller can name the key."""

        async def op(c: aetcd.Client) -> Any:
            await c.connect()
            request = aetcd.rpc.RangeRequest(key=key.encode())
            try:
                return await c.kvstub.Range(request, timeout=self.timeout, metadata=c.metadata)
            except grpc.aio.AioRpcError as exc:
                if _too_large(exc):
                    return _TOO_LARGE
                raise

        response = await self._call(op)
        if response is _TOO_LARGE:
            problem = "larger than one etcd answer may be"
            warn_once(key, 0, problem)
            return KeyValue(key, None, 0, 0, 0, problem)
        if not response.kvs:
            return None
        kv = _decode(response.kvs[0])
        if kv is not None and kv.problem:
            warn_once(kv.key, kv.mod_revision, kv.problem)
        return kv

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
            pages = self._pages(
                prefix, limit=limit, newest_first=newest_first, before=before, snapshot=True
            )
            try:
                async for kv in pages:
                    found.append(kv)
                return found, pages.revision
            except _SnapshotCompacted:
                continue  # compacted between two pages: read the whole prefix again
        raise EtcdUnavailable(f"etcd's history kept being compacted while {prefix} was read; try again")

    async def scan(self, prefix: str, start: str | None = None) -> AsyncIterator[KeyValue]:
        """Every decodable key under ``prefix`` from the key ``start`` on, in key order, read page by
        page as the caller goes (``/inspect`` stops early): each page at the store's revision of the
        moment, so a long scan sees keys written meanwhile."""
        async for kv in self._pages(prefix, start=start):
            yield kv

    async def list_page(self, prefix: str, start: str, limit: int) -> list[KeyValue]:
        """At most ``limit`` keys under ``prefix`` from the key ``start`` on, in key order."""
        found = []
        async for kv in self._pages(prefix, start=start, limit=limit):
            found.append(kv)
        return found

    def _pages(
        self,
        prefix: str,
        *,
        start: str | None = None,
        limit: int = 0,
        newest_first: bool = False,
        before: str | None = None,
        snapshot: bool = False,
    ) -> _Pages:
        return _Pages(self, prefix, start, limit, newest_first, before, snapshot)

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
        """One Range call: its answer, ``_TOO_LARGE`` when it does not fit one gRPC message, or
        ``_COMPACTED`` when ``revision`` is gone."""
        request = aetcd.rpc.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            sort_order=aetcd.rpc.RangeRequest.DESCEND if descend else aetcd.rpc.RangeRequest.ASCEND,
            sort_target=aetcd.rpc.RangeRequest.KEY,
        )

        async def op(c: aetcd.Client) -> Any:
            await c.connect()
            try:
                return await c.kvstub.Range(request, timeout=self.timeout, metadata=c.metadata)
            except grpc.aio.AioRpcError as exc:
                if _too_large(exc):
                    return _TOO_LARGE
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (exc.details() or ""):
                    return _COMPACTED
                raise

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

    async def lease_ttl(self, lease_id: int) -> tuple[int, int]:
        """``(remaining, granted)`` seconds of a lease; remaining is -1 when it does not exist."""
        reply = await self._call(lambda c: c.get_lease_info(lease_id, keys=False))
        return int(reply.TTL), int(reply.grantedTTL)

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
            if _too_large(exc):
                # Watching again from the same revision would meet the same answer for ever.
                raise WatchTooLarge(short(exc)) from exc
            await self._next_endpoint(client)
            raise EtcdUnavailable(f"the watch on {prefix} broke: {short(exc)}") from exc
        finally:
            # Cancelling queues a request on the stream; a dead stream must not hang us here.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(watch.cancel()), 1)


def _encode(value: Any) -> bytes:
    return encode_value(value)


def _decode(kv: Any) -> KeyValue | None:
    """A key-value of etcd's answer, its value decoded at the one edge (``values``); None when even
    its key cannot be read (not UTF-8: no MAO key)."""
    key = decode_key(kv.key)
    if key is None:
        warn_once(repr(bytes(kv.key))[:300], kv.mod_revision, "its key is not UTF-8")
        return None
    decoded = decode_value(kv.value)
    return KeyValue(
        key=key,
        value=decoded.value,
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
        lease=kv.lease,
        problem=decoded.problem,
    )


def _too_large(exc: BaseException) -> bool:
    """Whether gRPC refused an answer for its size (``RESOURCE_EXHAUSTED``, "larger than max")."""
    cause = exc if isinstance(exc, grpc.aio.AioRpcError) else exc.__cause__
    if isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return True
    return "larger than max" in str(exc)


class _SnapshotCompacted(Exception):
    """The revision a paged listing is read at was compacted between two pages."""


class _Pages:
    """An async iterator over the decodable keys of a range, read in pages (see ``PAGE_BYTES``);
    ``revision`` is the store revision of the first page. With ``snapshot`` every page is read at
    that revision (``_SnapshotCompacted`` when etcd compacted it meanwhile)."""

    def __init__(
        self,
        etcd: Etcd,
        prefix: str,
        start: str | None,
        limit: int,
        newest_first: bool,
        before: str | None,
        snapshot: bool,
    ) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.low = (start or prefix).encode()
        self.high = before.encode() if before else aetcd.utils.prefix_range_end(prefix.encode())
        self.limit = limit
        self.descend = newest_first
        self.snapshot = snapshot
        self.revision = 0

    def __aiter__(self) -> AsyncIterator[KeyValue]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KeyValue]:
        page, given = FIRST_PAGE, 0
        while True:
            want = min(page, self.limit - given) if self.limit else page
            response = await self.etcd._range(
                self.low,
                self.high,
                limit=want,
                revision=self.revision if self.snapshot else 0,
                descend=self.descend,
            )
            if response is _COMPACTED:
                raise _SnapshotCompacted
            if response is _TOO_LARGE:
                if want > 1:
                    page = max(1, want // 4)
                    continue
                await self._skip_one()
                continue
            if not self.revision:
                self.revision = int(response.header.revision)
            kvs = list(response.kvs)
            size = 0
            for raw in kvs:
                size += len(raw.key) + len(raw.value)
                kv = _decode(raw)
                if kv is None:
                    continue
                if kv.problem:
                    warn_once(kv.key, kv.mod_revision, kv.problem)
                    continue
                yield kv
                given += 1
                if self.limit and given >= self.limit:
                    return
            if not kvs or not response.more:
                return
            self._past(bytes(kvs[-1].key))
            page = max(1, min(PAGE_KEYS, PAGE_BYTES * len(kvs) // max(size, 1)))

    def _past(self, key: bytes) -> None:
        if self.descend:
            self.high = key  # the range's end is exclusive
        else:
            self.low = key + b"\0"

    async def _skip_one(self) -> None:
        """One value is larger than a gRPC answer may be: name it, and go on past it."""
        response = await self.etcd._range(
            self.low,
            self.high,
            limit=1,
            revision=self.revision if self.snapshot else 0,
            descend=self.descend,
            keys_only=True,
        )
        if response is _COMPACTED:
            raise _SnapshotCompacted
        if response is _TOO_LARGE or not response.kvs:  # cannot happen for a key alone; stop
            raise EtcdUnavailable(f"etcd could not send the keys under {self.prefix} in any page size")
        self.revision = self.revision or int(response.header.revision)
        raw = response.kvs[0]
        shown = decode_key(raw.key) or repr(bytes(raw.key))[:300]
        warn_once(shown, raw.mod_revision, "larger than one etcd answer may be")
        self._past(bytes(raw.key))
