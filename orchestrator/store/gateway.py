"""The gateway's own state in SQL: its API keys (hashed) and how far the raw-entry listener got.

- ``GatewayKeyStore``: keys are instance-local. Only the SHA-256 of a key is stored; the key itself
  is shown once, when it is created.
- ``ListenerProgress``: one row per raw dataset, the etcd revision up to which every entry this
  instance acknowledged is committed there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from . import Store
from .tables import GatewayKeyRow, GatewayProgressRow, utcnow


class GatewayKeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, name: str, key_hash: str) -> dict[str, Any]:
        try:
            async with self.store.session(f"create gateway key {name}") as s:
                if await s.get(GatewayKeyRow, name) is not None:
                    raise _taken(name)
                row = GatewayKeyRow(name=name, key_hash=key_hash, created_at=utcnow())
                s.add(row)
                await s.flush()
                return _key(row)
        except IntegrityError:  # created concurrently under the same name
            raise _taken(name) from None

    async def all(self) -> list[dict[str, Any]]:
        async with self.store.reading("list gateway keys") as s:
            rows = (await s.scalars(select(GatewayKeyRow).order_by(GatewayKeyRow.name))).all()
            return [_key(row) for row in rows]

    async def name_of(self, key_hash: str) -> str | None:
        async with self.store.reading("check a gateway key") as s:
            found = await s.scalar(select(GatewayKeyRow.name).where(GatewayKeyRow.key_hash == key_hash))
            return str(found) if found is not None else None

    async def used(self, name: str, when: datetime) -> None:
        async with self.store.session(f"record the use of gateway key {name}") as s:
            await s.execute(update(GatewayKeyRow).where(GatewayKeyRow.name == name).values(last_used_at=when))

    async def revoke(self, name: str) -> bool:
        async with self.store.session(f"revoke gateway key {name}") as s:
            result = await s.execute(delete(GatewayKeyRow).where(GatewayKeyRow.name == name))
            return bool(getattr(result, "rowcount", 0))


class ListenerProgress:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, dataset: str) -> tuple[int, int] | None:
        """(revision, entries written so far), or None when the listener never ran for ``dataset``."""
        async with self.store.reading(f"read the raw listener's progress in {dataset}") as s:
            row = await s.get(GatewayProgressRow, dataset)
            return (int(row.revision), int(row.entries)) if row else None

    async def put(self, dataset: str, revision: int, added: int = 0) -> None:
        async with self.store.session(f"record the raw listener's progress in {dataset}") as s:
            row = await s.get(GatewayProgressRow, dataset)
            if row is None:
                s.add(
                    GatewayProgressRow(dataset=dataset, revision=revision, entries=added, updated_at=utcnow())
                )
            else:
                row.revision = max(int(row.revision), revision)
                row.entries = int(row.entries) + added
                row.updated_at = utcnow()


def _key(row: GatewayKeyRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }


def _taken(name: str) -> Conflict:
    return Conflict(
        f"a gateway key named {name!r} exists already; revoke it first or choose another name",
        code="gateway_key_exists",
    )
