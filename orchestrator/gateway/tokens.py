"""Gateway API keys, and who a request comes from.

A gateway key (``mao_gw_`` + 43 URL-safe characters, 256 random bits) lets an external tool call
``/write``, ``/read`` and ``/inspect`` on this instance and nothing else. Keys are instance-local and
only their SHA-256 is stored, so the database never holds a usable key: a plain hash suffices
(no salt, no slow KDF) because the key is random, not a password. ``last_used_at`` is written at
most once a minute per key, so a busy tool does not cost a database write per request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound
from ..store.gateway import GatewayKeyStore
from ..store.tables import utcnow

TOKEN_PREFIX = "mao_gw_"
# The routes a gateway key may call; everything else needs the admin token.
GATEWAY_ROUTES = frozenset({("POST", "/write"), ("POST", "/read"), ("POST", "/inspect")})
USE_RECORD_INTERVAL = 60.0


@dataclass(frozen=True)
class Principal:
    """Who sent a request: ``admin`` (the API token, or anyone on an open loopback API) or the
    name of a gateway key."""

    name: str
    admin: bool


ADMIN = Principal("admin", admin=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_gateway_key(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


class GatewayKeys:
    def __init__(self, keys: GatewayKeyStore) -> None:
        self.keys = keys
        self._recorded: dict[str, float] = {}  # name -> monotonic time of the last recorded use

    async def create(self, name: str) -> dict[str, Any]:
        """A new key; the answer is the only place it is ever shown."""
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = await self.keys.create(name, hash_key(key))
        return {"name": row["name"], "key": key, "created_at": row["created_at"]}

    async def list(self) -> list[dict[str, Any]]:
        return await self.keys.all()

    async def revoke(self, name: str) -> None:
        if not await self.keys.revoke(name):
            raise NotFound(f"no gateway key named {name!r} on this instance")
        self._recorded.pop(name, None)

    async def identify(self, key: str) -> Principal | None:
        """The principal of a gateway key, or None when no such key exists (revoked or never made)."""
        name = await self.keys.name_of(hash_key(key))
        if name is None:
            return None
        now = time.monotonic()
        if now - self._recorded.get(name, -USE_RECORD_INTERVAL) >= USE_RECORD_INTERVAL:
            self._recorded[name] = now
            await self.keys.used(name, utcnow())
        return Principal(name, admin=False)
