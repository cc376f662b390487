"""The backends of one instance, by the operator's names (``MAO_BACKENDS``): built once at start,
asked by name. The engine never branches on a backend's kind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import BadRequest
from .seam import Backend, Health

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 10.0


class UnknownBackend(BadRequest):
    code = "unknown_backend"


class Backends:
    def __init__(self, backends: dict[str, Backend], default: str, kinds: dict[str, str]) -> None:
        self._backends = backends
        self.default = default
        self.kinds = kinds

    @classmethod
    def build(cls, settings: Settings) -> Backends:
        return cls(
            {b.name: b.build(settings) for b in settings.backends},
            settings.default_backend,
            {b.name: b.kind for b in settings.backends},
        )

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._backends.values())

    def names(self) -> list[str]:
        return list(self._backends)

    def get(self, name: str | None) -> Backend:
        """The backend called ``name`` (None: the default); UnknownBackend (400) otherwise."""
        backend = self._backends.get(name or self.default)
        if backend is None:
            raise UnknownBackend(
                f"no backend {name!r} on this instance (MAO_BACKENDS has {', '.join(self._backends) or 'none'})",
                backend=name,
            )
        return backend

    def has(self, name: str) -> bool:
        return name in self._backends

    async def start(self) -> None:
        for backend in self:
            await backend.start()

    async def close(self) -> None:
        for backend in self:
            try:
                await backend.close()
            except Exception:
                log.exception("closing backend %s failed", backend.name)

    async def health(self) -> dict[str, Health]:
        """Every backend's health, asked side by side, each bounded."""

        async def ask(backend: Backend) -> Health:
            try:
                return await asyncio.wait_for(backend.health(), HEALTH_TIMEOUT)
            except TimeoutError:
                return Health(ok=False, message=f"backend {backend.name} did not answer within {HEALTH_TIMEOUT:g} s")

        answers = await asyncio.gather(*(ask(b) for b in self))
        return dict(zip(self._backends, answers, strict=True))
