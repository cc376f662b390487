"""A resilient list-then-watch loop on one etcd prefix, shared by every background watcher.

``PrefixWatch.run()`` lists the prefix (``on_list(values, revision)``), then delivers every change
after that revision (``on_event(event)``), forever:

- a watch that ends (connection replaced) or goes quiet for ``resync_every`` seconds is opened again
  from the last revision delivered, so nothing is missed and nothing is skipped; with ``relist`` the
  prefix is listed again instead (for callers that reconcile a whole set, like the schedules);
- a watch whose revision etcd has compacted away falls back to listing the prefix again;
- while etcd is unreachable, or a handler fails (the database is away), it waits with backoff (1 s
  doubling to 30 s) and then resumes from where it was.

A watch resumes *at* the last revision delivered, not after it: one etcd revision can hold several
events (a transaction, or a revoked lease deleting its keys), and a watch cancelled half-way through
them must not lose the rest. Handlers therefore see an event again now and then and must be
idempotent. ``start_revision`` resumes a watch persisted by a previous process (None: list first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import EtcdUnavailable
from .etcd import Etcd, HistoryCompacted, KeyValue, WatchEvent

log = logging.getLogger(__name__)

ListHandler = Callable[[list[KeyValue], int], Awaitable[None]]
EventHandler = Callable[[WatchEvent], Awaitable[None]]


class PrefixWatch:
    def __init__(
        self,
        etcd: Etcd,
        prefix: str,
        *,
        on_list: ListHandler,
        on_event: EventHandler,
        what: str,
        resync_every: float = 30.0,
        relist: bool = False,
        start_revision: int | None = None,
    ) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.on_list = on_list
        self.on_event = on_event
        self.what = what
        self.resync_every = resync_every
        self.relist = relist
        self.revision = start_revision  # the next revision to watch from; None: list first

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                if self.revision is None:
                    values, listed = await self.etcd.list_with_revision(self.prefix)
                    await self.on_list(values, listed)
                    self.revision = listed + 1
                delay = 1.0
                async with asyncio.timeout(self.resync_every):
                    async for event in self.etcd.watch_prefix(self.prefix, self.revision):
                        await self.on_event(event)
                        self.revision = event.revision
                await asyncio.sleep(0.2)  # the watch ended (connection replaced): watch again
            except TimeoutError:
                pass  # quiet for a while: open the watch again, in case the stream died silently
            except HistoryCompacted as exc:
                log.info("%s: %s; listing %s again", self.what, exc, self.prefix)
                self.revision = None
                continue
            except EtcdUnavailable as exc:
                # etcd logs the outage once; what the handlers know stays as last seen meanwhile.
                log.debug("%s waits for etcd: %s", self.what, exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # noqa: BLE001 - a handler's failure must not end the watch for good
                log.warning("%s: %s; trying again in %g s", self.what, getattr(exc, "message", exc), delay)
                log.debug("%s failed", self.what, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            if self.relist:
                self.revision = None
