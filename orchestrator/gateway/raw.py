"""``/write``, ``/read`` and ``/inspect`` on etcd.

A raw entry is stored at ``/mao/v1/raw/<key>`` as ``{value, written_at, instance, by}`` and bound to a
lease, so etcd deletes it by itself after ``MAO_RAW_TTL`` seconds. Granting a lease per write would
double the writes etcd has to make, so one lease of TTL + 1 s is shared by all the writes of the
same second: every entry lives between TTL and TTL + 1 s. Insights (``/mao/v1/insights/<tool>``)
are written by ``insights`` and have no lease: the latest one of each tool stays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..federation.etcd import Etcd
from ..federation.leases import SharedLease
from ..federation.space import EtcdSpace
from .limits import (
    MAX_INSPECT_BYTES,
    MAX_INSPECT_ENTRIES,
    MAX_NESTING,
    MAX_VALUE_BYTES,
    RateLimiter,
    WriteBudget,
    nested_too_deeply,
)
from .namespace import NAMESPACES, GatewayKey, from_etcd_key, read_keys, write_key

LEASE_SHARED_FOR = 1.0  # seconds during which writes share one lease


class RawStore:
    def __init__(
        self,
        etcd: Etcd,
        instance: str,
        ttl: int,
        limiter: RateLimiter,
        budget: WriteBudget | None = None,
        secret: bytes | None = None,
        space: EtcdSpace | None = None,
    ) -> None:
        self.space = space
        self.etcd = etcd
        self.instance = instance
        self.secret = secret
        self.ttl = ttl
        self.limiter = limiter
        self.budget = budget
        self._lease = SharedLease(etcd, ttl=ttl + int(LEASE_SHARED_FOR), reuse_for=LEASE_SHARED_FOR)

    async def write(self, key: object, value: Any, by: str) -> dict[str, Any]:
        target = write_key(key)
        size = len(encode_value(value))
        if size > MAX_VALUE_BYTES:
            raise PayloadTooLarge(
                f"the value is {size} bytes as JSON; at most {MAX_VALUE_BYTES} ({MAX_VALUE_BYTES // 1024} KiB) "
                "are allowed: keep large data in a dataset and write a reference to it",
                size=size,
                limit=MAX_VALUE_BYTES,
            )
        if self.space is not None:  # etcd near its quota: no new entries until room is made
            self.space.refuse_gateway_writes()
        self.limiter.take(target.path)
        if self.budget is not None:
            self.budget.take(size)
        stored: dict[str, Any] = {
            "value": value,
            "written_at": datetime.now(UTC).isoformat(),
            "instance": self.instance,
            "by": by,
        }
        if self.secret is not None:
            # Proves to this instance's raw listener that it acknowledged the entry (``entry_mac``).
            stored["mac"] = entry_mac(self.secret, target.etcd_key, stored)
        # A lease revoked or expired early (an etcd restored from backup) is replaced once, for all the
        # writers that found it gone at the same time.
        revision = await self._lease.with_lease(
            lambda lease: self.etcd.put(target.etcd_key, stored, lease=lease)
        )
        return {"key": target.shown, "ttl": self.ttl, "revision": revision}

    async def read(self, key: object) -> Any:
        candidates = read_keys(key)
        for candidate in candidates:
            found = await self.etcd.get(candidate.etcd_key)
            if found is not None and found.problem is None:
                return without_mac(found.value)
        where = " or ".join(c.shown for c in candidates)
        raise NotFound(
            f"nothing stored at {where} (raw entries are kept {self.ttl} s; insights until the tool "
            "publishes new ones)"
        )

    async def inspect(self, key: object) -> dict[str, Any]:
        """Everything at and below ``key`` as ``{"raw/...": stored, "insights/...": stored}``, at most
        ``MAX_INSPECT_ENTRIES`` entries and ``MAX_INSPECT_BYTES`` of them; ``"truncated": true`` is
        added when there was more (no gateway key can be named ``truncated``: every one starts with
        its namespace). etcd is read in pages as the answer grows (``Etcd.scan``), so no answer from
        etcd exceeds its message limit however large the values under the prefix are."""
        found: dict[str, Any] = {}
        size = 0
        for candidate in read_keys(key, whole_namespace=True):
            async for kv_key, value in self._under(candidate):
                shown = from_etcd_key(kv_key)
                if shown is None:
                    continue
                size += len(json.dumps(value, separators=(",", ":"))) + len(shown.shown)
                if len(found) >= MAX_INSPECT_ENTRIES or size > MAX_INSPECT_BYTES:
                    return {**found, "truncated": True}
                found[shown.shown] = value
        return found

    async def _under(self, key: GatewayKey) -> AsyncIterator[tuple[str, Any]]:
        if key.path:
            exact = await self.etcd.get(key.etcd_key)
            if exact is not None and exact.problem is None:
                yield exact.key, without_mac(exact.value)
            prefix = key.etcd_key + "/"
        else:
            prefix = NAMESPACES[key.namespace]
        # Pages bounded by bytes as well as keys (Etcd.scan): however large the values under the
        # prefix, no answer from etcd has to carry more than one of them.
        async for kv in self.etcd.scan(prefix):
            yield kv.key, without_mac(kv.value)


def entry_mac(secret: bytes, etcd_key: str, stored: dict[str, Any]) -> str:
    """HMAC-SHA256 of a raw entry (its key and its stored value without the MAC) with this instance's
    own secret (``private_files.gateway_secret``): any member can put a key under ``/mao/v1/raw/``
    naming this instance, only this instance can mark it, so its raw listener commits into git
    exactly the entries it acknowledged. Computed over the canonical JSON a reader decodes again."""
    body = {k: v for k, v in stored.items() if k != "mac"}
    message = etcd_key.encode() + b"\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def without_mac(stored: Any) -> Any:
    """A stored entry as ``/read`` and ``/inspect`` answer it: without its MAC (of no use to others)."""
    return {k: v for k, v in stored.items() if k != "mac"} if isinstance(stored, dict) else stored


def encode_value(value: Any) -> bytes:
    """The value as compact JSON (what the size bound counts); NaN and Infinity are not JSON, and a
    value nested deeper than ``MAX_NESTING`` is refused (json would hit the recursion limit)."""
    if nested_too_deeply(value):
        raise BadRequest(
            f"value is nested too deeply: at most {MAX_NESTING} levels of arrays and objects",
            code="invalid_value",
        )
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"value is not valid JSON: {exc}", code="invalid_value") from None
