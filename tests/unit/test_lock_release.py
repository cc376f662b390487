"""A held lock is released when its holder is done, even when the lease refresh answers at the very
moment the holder cancels the refreshing task (issue 18's 200-run test found runs held for ten
minutes: Python 3.11's ``asyncio.wait_for`` swallowed that cancel, the refresh loop went on for ever
and the lock with it). The same race is provoked here on every release, with a stand-in etcd."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from orchestrator.federation.locks import Locks


class RacingEtcd:
    """Answers a refresh at once; the holder's release is timed to land in the same loop turn."""

    def __init__(self) -> None:
        self.refreshed = asyncio.Event()
        self.revoked: list[int] = []
        self.keys: dict[str, Any] = {}

    async def grant_lease(self, ttl: int) -> int:
        return 7

    async def create(self, key: str, value: Any, lease: int | None = None) -> bool:
        if key in self.keys:
            return False
        self.keys[key] = value
        return True

    async def refresh_lease(self, lease: int) -> int:
        self.refreshed.set()
        return 3

    async def revoke_lease(self, lease: int) -> None:
        self.revoked.append(lease)
        self.keys.clear()


def test_release_is_never_held_up_by_a_refresh_answering_at_the_same_moment() -> None:
    async def scenario() -> int:
        etcd = RacingEtcd()
        locks = Locks(etcd, "n1", ttl=1)  # type: ignore[arg-type]
        for _ in range(10):
            etcd.refreshed.clear()
            async with locks.hold("/mao/v1/locks/x", "test"):
                await etcd.refreshed.wait()  # leave the moment a refresh has answered
            # released: the next hold can take the key
        return len(etcd.revoked)

    # On a thread of its own: a release that hangs (the bug) fails this test instead of the suite.
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(asyncio.run(scenario())), daemon=True)
    worker.start()
    worker.join(60)
    assert result == [10], "a lock's release hung: its refresh loop swallowed the cancel"
