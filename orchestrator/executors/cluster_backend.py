"""What the cluster backends (swarm, kubernetes) share: their rules asked of a policy object, one
submission of a name at a time, the names this process cancelled, and the age of an engine's
timestamp."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from .seam import Capabilities, ContainerSpec, Handle, Health

# How long a cancelled name is remembered (its ``wait`` ends ``cancelled``, not lost).
CANCELS_KEPT = 3600.0


class Policy(Protocol):
    """What a backend can do and whether a step may run there (swarm_policy.py, kube_policy.py)."""

    def capabilities(self) -> Capabilities: ...

    async def health(self) -> Health: ...

    async def resolve_image(self, image: str) -> str | None: ...

    async def validate(self, spec: ContainerSpec) -> None: ...


P = TypeVar("P", bound=Policy)


class ClusterBackend(Generic[P]):
    """The seam's methods the cluster backends answer alike: the questions about their rules,
    answered by their ``policy``, and ``submit``: checked, then one submission of a name at a time
    (``_submit``, the backend's own, finds the object an earlier one made)."""

    policy: P
    _submitting: NameLocks

    async def submit(self, spec: ContainerSpec) -> Handle:
        await self.validate(spec)
        async with self._submitting.held(spec.name):
            return await self._submit(spec)

    async def _submit(self, spec: ContainerSpec) -> Handle:
        raise NotImplementedError

    def capabilities(self) -> Capabilities:
        return self.policy.capabilities()

    async def health(self) -> Health:
        return await self.policy.health()

    async def resolve_image(self, image: str) -> str | None:
        return await self.policy.resolve_image(image)

    async def validate(self, spec: ContainerSpec) -> None:
        await self.policy.validate(spec)


@dataclass
class _NameLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class NameLocks:
    """Submissions of one name, one at a time (a second one finds the first one's object); a name's
    lock is dropped once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, _NameLock] = {}

    @asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(name, _NameLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(name, None)


class CancelledNames:
    """The names this process cancelled in the last ``kept`` seconds: their end is ``cancelled``."""

    def __init__(self, kept: float = CANCELS_KEPT) -> None:
        self._kept = kept
        self._at: dict[str, float] = {}

    def add(self, name: str) -> None:
        now = time.monotonic()
        self._at[name] = now
        for old in [n for n, at in self._at.items() if at < now - self._kept]:
            del self._at[old]

    def __contains__(self, name: object) -> bool:
        return name in self._at


def age(since: datetime | None) -> float:
    """Seconds from ``since`` (an engine timestamp) to now; 0 when unknown or in the future (skew)."""
    if since is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - since).total_seconds())
