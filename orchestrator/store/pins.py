"""The pins table (``tables.PinRow``): what this instance accepted of each registration it uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from . import Store
from .tables import PinRow, utcnow

# The gateway's raw listener pins its dataset under this scope; no pipeline name has a colon.
RAW_SCOPE = ":raw"


@dataclass(frozen=True)
class PinRecord:
    scope: str
    kind: str
    name: str
    value: dict[str, Any]
    pinned_at: datetime


class PinStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def scope(self, scope: str) -> list[PinRecord]:
        # Reads: they do not wait for the writer's turn (one writer at a time on SQLite).
        async with self.store.reading(f"read the pins of {scope}") as s:
            rows = (await s.scalars(select(PinRow).where(PinRow.scope == scope))).all()
            return [_record(r) for r in rows]

    async def of(self, kind: str, name: str) -> list[PinRecord]:
        """Every scope's pin of one registration."""
        async with self.store.reading(f"read the pins of {kind} {name}") as s:
            query = select(PinRow).where(PinRow.kind == kind, PinRow.name == name)
            return [_record(r) for r in (await s.scalars(query)).all()]

    async def put(self, records: Sequence[PinRecord]) -> None:
        """Pin (or pin again) each record, in one transaction."""
        if not records:
            return
        async with self.store.session("pin registrations") as s:
            for record in records:
                row = await s.get(PinRow, (record.scope, record.kind, record.name))
                if row is None:
                    s.add(
                        PinRow(
                            scope=record.scope,
                            kind=record.kind,
                            name=record.name,
                            value=record.value,
                            pinned_at=record.pinned_at,
                        )
                    )
                else:
                    row.value, row.pinned_at = record.value, record.pinned_at

    async def drop_scope(self, scope: str) -> None:
        async with self.store.session(f"forget the pins of {scope}") as s:
            await s.execute(delete(PinRow).where(PinRow.scope == scope))


def pin_record(scope: str, kind: str, name: str, value: dict[str, Any]) -> PinRecord:
    return PinRecord(scope, kind, name, value, utcnow())


def _record(row: PinRow) -> PinRecord:
    return PinRecord(row.scope, row.kind, row.name, dict(row.value), row.pinned_at)
