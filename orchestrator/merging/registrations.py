"""Tool and dataset registrations as a run needs them: from etcd, or the local copy while it is away.

Every successful read refreshes the copy in SQL (``RegistryCache``) when it changed (the last value
written is remembered, so a run's reads cost no SQL writes); a read that finds etcd unreachable
falls back to that copy and says so in the log. A registration that etcd reports as gone is dropped
from the copy too, so the fallback never resurrects a deleted tool or dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel

from ..domain.pipeline import Dataset, Tool
from ..errors import EtcdUnavailable
from ..federation.registry import Registry
from ..store.outage import RegistryCache

log = logging.getLogger(__name__)
M = TypeVar("M", Tool, Dataset)


class Registrations:
    def __init__(self, registry: Registry, cache: RegistryCache) -> None:
        self.registry = registry
        self.cache = cache
        self._copied: dict[tuple[str, str], dict[str, object]] = {}  # what the SQL copy holds now

    async def tool(self, name: str) -> Tool | None:
        return await self._read("tool", name, self.registry.tool, Tool)

    async def dataset(self, name: str) -> Dataset | None:
        return await self._read("dataset", name, self.registry.dataset, Dataset)

    async def remember(self, kind: str, value: BaseModel) -> None:
        """Keep a copy of a registration read elsewhere (e.g. while initialising a pipeline)."""
        await self._copy(kind, str(getattr(value, "name")), value.model_dump())  # noqa: B009

    async def _read(
        self, kind: str, name: str, read: Callable[[str], Awaitable[M | None]], model: type[M]
    ) -> M | None:
        try:
            value = await read(name)
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
            return model.model_validate(data)
        if value is None:
            await self.cache.drop(kind, name)
            self._copied.pop((kind, name), None)
        else:
            await self._copy(kind, name, value.model_dump())
        return value

    async def _copy(self, kind: str, name: str, data: dict[str, object]) -> None:
        if self._copied.get((kind, name)) != data:
            await self.cache.put(kind, name, data)
            self._copied[(kind, name)] = data
