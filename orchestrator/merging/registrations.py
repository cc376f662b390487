"""Tool and dataset registrations as a run needs them: from etcd, or the local copy while it is away.

Every successful read refreshes the copy in SQL (``RegistryCache``) when it changed (the last value
written is remembered, so a run's reads cost no SQL writes); a read that finds etcd unreachable
falls back to that copy and says so in the log. A registration that etcd reports as gone is dropped
from the copy too, so the fallback never resurrects a deleted tool or dataset. The copy keeps the
registration's ownership (``Provenance``) with it, so that the pins compare owners either way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from ..domain.pipeline import Dataset, Tool
from ..errors import EtcdUnavailable
from ..federation.ownership import LEGACY, Provenance
from ..federation.registry import Registered, Registry
from ..store.outage import RegistryCache

log = logging.getLogger(__name__)
M = TypeVar("M", Tool, Dataset)
PROVENANCE_FIELDS = ("owner", "revision", "signed_by", "signed_at", "proof")


class Registrations:
    def __init__(self, registry: Registry, cache: RegistryCache) -> None:
        self.registry = registry
        self.cache = cache
        self._copied: dict[tuple[str, str], dict[str, object]] = {}  # what the SQL copy holds now

    async def tool_entry(self, name: str) -> Registered[Tool] | None:
        return await self._read("tool", name, self.registry.tool_entry, Tool)

    async def dataset_entry(self, name: str) -> Registered[Dataset] | None:
        return await self._read("dataset", name, self.registry.dataset_entry, Dataset)

    async def tool(self, name: str) -> Tool | None:
        entry = await self.tool_entry(name)
        return entry.value if entry else None

    async def dataset(self, name: str) -> Dataset | None:
        entry = await self.dataset_entry(name)
        return entry.value if entry else None

    async def remember(self, kind: str, entry: Registered[Any]) -> None:
        """Keep a copy of a registration read elsewhere (e.g. while initialising a pipeline)."""
        value: BaseModel = entry.value
        await self._copy(kind, str(getattr(value, "name")), _stored(entry))  # noqa: B009

    async def _read(
        self,
        kind: str,
        name: str,
        read: Callable[[str], Awaitable[Registered[M] | None]],
        model: type[M],
    ) -> Registered[M] | None:
        try:
            entry = await read(name)
        except EtcdUnavailable as exc:
            cached = await self.cache.get(kind, name)
            if cached is None:
                raise EtcdUnavailable(
                    f"{exc.message} This instance has no local copy of {kind} {name!r} to run without it."
                ) from exc
            data, cached_at = cached
            log.warning(
                "etcd is unreachable: using this instance's copy of %s %s from %s", kind, name, cached_at
            )
            return Registered(model.model_validate(data), _provenance(data), 0)
        if entry is None:
            await self.cache.drop(kind, name)
            self._copied.pop((kind, name), None)
        else:
            await self._copy(kind, name, _stored(entry))
        return entry

    async def _copy(self, kind: str, name: str, data: dict[str, object]) -> None:
        if self._copied.get((kind, name)) != data:
            await self.cache.put(kind, name, data)
            self._copied[(kind, name)] = data


def _stored(entry: Registered[Any]) -> dict[str, object]:
    return {**entry.value.model_dump(), **entry.provenance.public()}


def _provenance(data: dict[str, Any]) -> Provenance:
    """The ownership kept with a copy; a copy made before owners existed has none."""
    if not isinstance(data.get("proof"), str):
        return LEGACY
    revision = data.get("revision")
    return Provenance(
        owner=data.get("owner") if isinstance(data.get("owner"), str) else None,
        revision=revision if isinstance(revision, int) else 0,
        signed_by=data.get("signed_by") if isinstance(data.get("signed_by"), str) else None,
        signed_at=data.get("signed_at") if isinstance(data.get("signed_at"), str) else None,
        proof=str(data["proof"]),
    )
