"""A pipeline's version history as the API shows it: the list, one version's definition, and the
difference between two versions (``domain.versions``). Versions are recorded by the init itself
(``store.versions.record_version``); this module only reads them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..domain.versions import difference
from ..errors import NotFound
from ..store import Store
from ..store.versions import PipelineVersions, UnknownVersion, VersionRecord


def _shown(record: VersionRecord, current: int | None) -> dict[str, Any]:
    return {
        "pipeline": record.pipeline,
        "version": record.number,
        "hash": record.hash,
        "created_at": record.created_at.isoformat(),
        "created_by": record.created_by,
        "current": record.number == current,
        "steps": [step.get("name") for step in record.definition.get("steps", [])],
    }


def _changes(before: VersionRecord | None, record: VersionRecord) -> str:
    if before is None:
        return "first version"
    return difference(before.pipeline_model(), record.pipeline_model()).in_one_line()


class VersionHistory:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.versions = PipelineVersions(store)

    async def current(self, pipelines: list[str] | None = None) -> dict[str, int]:
        """Each initialised pipeline's current version number."""
        return await self.versions.current(pipelines)

    async def list(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` versions, newest first, each with what changed from the one before
        (``changes``). A deleted pipeline's versions are still listed (its runs name them), none
        ``current``; a name never initialised here is a 404."""
        records = await self.versions.recent(name, limit + 1)  # one more: the oldest shown's predecessor
        if not records:
            raise NotFound(f"pipeline {name!r} has no versions on this instance (it was never initialised here)")
        current = (await self.current([name])).get(name)
        # Numbers run 1, 2, ... without gaps: each shown version's predecessor is the next record, and
        # only version 1 has none.
        pairs = list(zip(records[:limit], [*records[1:], None], strict=False))

        def summaries() -> list[dict[str, Any]]:
            return [
                {**_shown(record, current), "changes": _changes(before, record)} for record, before in pairs
            ]

        # A difference per version: pure Python over definitions of up to 50 steps, off the event loop.
        return await asyncio.to_thread(summaries)

    async def get(self, name: str, number: int) -> dict[str, Any]:
        record = await self._record(name, number)
        current = (await self.current([name])).get(name)
        return {**_shown(record, current), "definition": record.shown()}

    async def diff(self, name: str, number: int, against: int | None) -> dict[str, Any]:
        """What changed from version ``against`` (default: the one before; none before version 1:
        every step is added) to version ``number``. ``against`` may be the newer one: the difference
        then reads backwards."""
        record = await self._record(name, number)
        base_number = against if against is not None else (number - 1 if number > 1 else None)
        base = await self._record(name, base_number) if base_number is not None else None
        labels = (f"{name} version {base_number}" if base else "(nothing)", f"{name} version {number}")
        found = await asyncio.to_thread(
            lambda: difference(base.pipeline_model() if base else None, record.pipeline_model(), labels)
        )
        return {
            "pipeline": name,
            "version": number,
            "against": base_number,
            "hash": record.hash,
            "against_hash": base.hash if base else None,
            "summary": found.in_one_line(),
            **found.model_dump(mode="json"),
        }

    async def _record(self, name: str, number: int) -> VersionRecord:
        record = await self.versions.get(name, number)
        if record is None:
            if not await self.versions.recent(name, 1):
                raise NotFound(
                    f"pipeline {name!r} has no versions on this instance (it was never initialised here)"
                )
            raise UnknownVersion(
                f"pipeline {name!r} has no version {number} (GET /pipeline/{name}/versions lists them)"
            )
        return record
