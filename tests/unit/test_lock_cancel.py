"""One instance's locks share one session lease, so what goes wrong with one lock must not end it:
a run cancelled (or timed out) while its take or release transaction is in flight leaves the
session, and every other lock on it, held; the key the transaction may have written is removed once
etcd answers (compare-and-delete on the holder record, whose token is unique). Only a transaction
etcd leaves unanswered for the TTL ends the session. And a refresh etcd answers with "lease not
found" ends it at once: that is an answer (the lease was revoked), not an outage. With a stand-in
etcd whose transactions wait until the test lets them answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from orchestrator.federation.failover import LeaseNotFound
from orchestrator.federation.lock_session import LockSession


class SlowEtcd:
    """Takes and releases wait for ``answer`` (when ``slow``); ``unanswered`` makes them never answer."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.slow = False
        self.answer = asyncio.Event()
        self.started = asyncio.Event()
        self.revoked: list[int] = []

    async def _wait(self) -> None:
        if self.slow:
            self.started.set()
            await self.answer.wait()

    async def grant_lease(self, ttl: int) -> int:
        return 7

    async def refresh_lease(self, lease: int) -> int:
        return 3

    async def revoke_lease(self, lease: int) -> None:
        self.revoked.append(lease)
        self.keys.clear()

    async def create_reading(
        self, key: str, value: Any, lease: int, reads: tuple[str, ...] = ()
    ) -> tuple[bool, dict[str, Any]]:
        await self._wait()
        if key in self.keys:
            return False, {}
        self.keys[key] = value
        return True, {}

    async def delete_putting(self, key: str, value: Any, puts: dict[str, Any]) -> bool:
        await self._wait()
        if self.keys.get(key) != value:
            return False
        del self.keys[key]
        self.keys.update(puts)
        return True


class LeaseGone(SlowEtcd):
    async def refresh_lease(self, lease: int) -> int:
        raise LeaseNotFound("etcd failed: requested lease not found")


async def test_a_refresh_answered_lease_not_found_ends_the_session_at_once() -> None:
    session = LockSession(LeaseGone(), lease=7, ttl=30, asked_at=time.monotonic())  # type: ignore[arg-type]
    await session._refresh()
    assert session.ended  # not believed held for the 29 s left of the TTL
