"""The one door to etcd: aetcd (asyncio) behind endpoint failover and error translation.

Contracts:
- Every method raises ``EtcdUnavailable`` (HTTP 503) when no endpoint answers in time; callers never
  see aetcd or gRPC exceptions.
- Reads are linearizable (the default in etcd v3), so a value written on one instance is seen by the
  next read on any other.
- ``create`` and ``update`` are compare-and-set: ``create`` writes only an absent key, ``update`` retries
  a read-modify-write until no one else wrote the key in between. Plain ``put`` overwrites.
- Keys bound to a lease vanish when the lease is revoked or expires (heartbeats, locks).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc

from ..errors import EtcdUnavailable, MaoError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Sentinel an ``update`` function returns to delete the key.
DELETE = object()


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: Any
    mod_revision: int
    create_revision: int
    lease: int


class Etcd:
    def __init__(self, endpoints: Sequence[tuple[str, int]], timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._current = 0
        self._client: aetcd.Client | None = None
        self._switch_lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._current]
        return f"{host}:{port}"

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # -- failover -------------------------------------------------------------------------------
    async def _call(self, operation: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run ``operation`` against the current endpoint, moving on to the next ones when it does
        not answer. Operations must be safe to repeat (reads, puts, compare-and-set)."""
        errors: list[str] = []
        for _ in range(len(self.endpoints)):
            client = await self._get_client()
            try:
                return await operation(client)
            except (
                TimeoutError,
                aetcd.exceptions.ConnectionFailedError,
                aetcd.exceptions.ConnectionTimeoutError,
            ) as exc:
                errors.append(f"{self.endpoint}: {_short(exc)}")
                await self._next_endpoint(client)
            except grpc.aio.AioRpcError as exc:  # members() is not wrapped by aetcd
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise MaoError(f"etcd refused the request: {exc.details()}") from exc
                errors.append(f"{self.endpoint}: {exc.details()}")
                await self._next_endpoint(client)
            except aetcd.exceptions.ClientError as exc:
                raise EtcdUnavailable(f"etcd failed: {_short(exc)}") from exc
        raise EtcdUnavailable(
            "etcd is unreachable (tried " + "; ".join(errors) + "). Check MAO_ETCD_ENDPOINTS and that "
            "a majority of the federation's etcd members is up."
        )

    async def _get_client(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.endpoints[self._current]
            self._client = aetcd.Client(host=host, port=port, timeout=self.timeout)
        return self._client

    async def _next_endpoint(self, failed: aetcd.Client) -> None:
        async with self._switch_lock:
            if self._client is failed:  # another task may have switched already
                self._client = None
                self._current = (self._current + 1) % len(self.endpoints)
                log.info("etcd endpoint switched to %s", self.endpoint)
                try:
                    await asyncio.wait_for(failed.close(), 2)
                except Exception:  # noqa: BLE001 - closing a dead channel may fail in many ways
                    pass

    # -- key-value ------------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        result = await self._call(lambda c: c.get(key.encode()))
        return _decode(result) if result is not None else None

    async def list(self, prefix: str) -> list[KeyValue]:
        result = await self._call(lambda c: c.get_prefix(prefix.encode(), sort_target="key"))
        return [_decode(kv) for kv in result]

    async def put(self, key: str, value: Any, lease: int | None = None) -> None:
        await self._call(lambda c: c.put(key.encode(), _encode(value), lease=lease))

    async def create(self, key: str, value: Any, lease: int | None = None) -> bool:
        """Write ``key`` only if it does not exist; True when written."""

        async def op(c: aetcd.Client) -> bool:
            ok, _ = await c.transaction(
                compare=[c.transactions.create(key.encode()) == 0],
                success=[c.transactions.put(key.encode(), _encode(value), lease=lease)],
                failure=[],
            )
            return bool(ok)

        return await self._call(op)

    async def delete(self, key: str) -> bool:
        result = await self._call(lambda c: c.delete(key.encode()))
        return bool(result and result.deleted)

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
                key: change(currents[key].value if currents[key] else None) for key, change in changes.items()
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


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
