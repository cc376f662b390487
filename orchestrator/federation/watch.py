"""A resilient list-then-watch loop on one etcd prefix, shared by every background watcher.

``PrefixWatch.run()`` lists the prefix (``on_list(values, revision)``), then delivers every change
after that revision (``on_event(event)``), forever:

- a watch that ends (connection replaced) or delivers nothing for ``resync_every`` seconds (an idle
  timeout: the time a handler takes does not count, and a busy watch is never cut) is opened again
  from the last revision delivered, so nothing is missed and nothing is skipped; with ``relist`` the
  prefix is listed again instead (for callers that reconcile a whole set, like the schedules);
- a watch whose revision etcd has compacted away falls back to listing the prefix again;
- while etcd is unreachable it waits with backoff (1 s doubling to 30 s, back to 1 s once a watch
  opens), and resumes at once when etcd answers again (``Etcd.on_available``);
- a handler that raises an error that passes (``Unavailable``: the database or etcd is away; a
  ``GitError``: a remote is unreachable) gets the same event again after a backoff of its own (1 s
  doubling to 30 s, back to 1 s once the watch got past that event);
- a handler that raises anything else (a bug, a record it cannot read, a 4xx-like ``MaoError``) would
  fail the same way every time: the error is logged with the key and revision and the watch moves
  past that event (or past the list), rather than stalling every later event behind it.

A watch resumes *at* the last revision delivered, not after it: one etcd revision can hold several
events (a transaction, or a revoked lease deleting its keys), and a watch cancelled half-way through
them must not lose the rest. Handlers therefore see an event again now and then and must be
idempotent (an event skipped because its handler failed is not handed to it again). ``start_revision``
resumes a watch persisted by a previous process (None: list first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import EtcdUnavailable, GitError, MaoError, Unavailable
from .answers import HistoryCompacted, KeyValue, WatchEvent
from .etcd import Etcd

log = logging.getLogger(__name__)

ListHandler = Callable[[list[KeyValue], int], Awaitable[None]]
EventHandler = Callable[[WatchEvent], Awaitable[None]]


# Errors a handler meets while a backend is away: retrying the same event later can succeed.
PASSING = (Unavailable, GitError)


class _HandlerFailed(Exception):
    """A handler's ``MaoError``, told apart from etcd's own (their backoffs differ)."""

    def __init__(self, error: MaoError) -> None:
        super().__init__(error.message)
        self.error = error


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
        # Keys whose event at ``self.revision`` was skipped: not handed over again when the watch
        # resumes at that revision.
        self._skipped: set[str] = set()
        self._etcd_back = asyncio.Event()  # set when etcd answers again after being unreachable
        etcd.on_available(self._etcd_back.set)

    async def run(self) -> None:
        etcd_delay = handler_delay = 1.0

        def opened() -> None:
            nonlocal etcd_delay
            etcd_delay = 1.0  # etcd answers: a stream that breaks later is a new failure

        while True:
            self._etcd_back.clear()  # from here on, etcd answering again cuts a pause short
            try:
                if self.revision is None:
                    values, listed = await self.etcd.list_with_revision(self.prefix)
                    await self._handle_list(values, listed)
                    self.revision = listed + 1
                    self._skipped.clear()
                loop, resumed_at = asyncio.get_running_loop(), self.revision
                async with asyncio.timeout_at(loop.time() + self.resync_every) as idle:
                    async for event in self.etcd.watch_prefix(self.prefix, resumed_at, on_open=opened):
                        idle.reschedule(None)  # a handler may take its time
                        await self._handle(event)
                        if event.revision > resumed_at:  # progress, not an event delivered again
                            handler_delay = 1.0
                        idle.reschedule(loop.time() + self.resync_every)
                await asyncio.sleep(0.2)  # the watch ended (connection replaced): watch again
            except TimeoutError:
                pass  # quiet for a while: open the watch again, in case the stream died silently
            except HistoryCompacted as exc:
                log.info("%s: %s; listing %s again", self.what, exc, self.prefix)
                self.revision = None
                continue
            except _HandlerFailed as failed:
                log.warning("%s: %s; trying again in %g s", self.what, failed.error.message, handler_delay)
                await asyncio.sleep(handler_delay)
                handler_delay = min(handler_delay * 2, 30.0)
            except EtcdUnavailable as exc:
                # etcd logs the outage once; what the handlers know stays as last seen meanwhile.
                log.debug("%s waits for etcd: %s", self.what, exc.message)
                await self._pause(etcd_delay)
                etcd_delay = min(etcd_delay * 2, 30.0)
            except Exception as exc:  # noqa: BLE001 - the watch itself must never end for good
                log.warning(
                    "%s: %s; trying again in %g s",
                    self.what,
                    getattr(exc, "message", exc),
                    etcd_delay,
                    exc_info=not isinstance(exc, MaoError),
                )
                await self._pause(etcd_delay)
                etcd_delay = min(etcd_delay * 2, 30.0)
            if self.relist:
                self.revision = None

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or until etcd answers again if that comes first."""
        waits = [asyncio.ensure_future(asyncio.sleep(delay)), asyncio.ensure_future(self._etcd_back.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _handle_list(self, values: list[KeyValue], revision: int) -> None:
        """``on_list``; an error that passes goes up (listed again later), anything else is logged and
        the watch goes on from after the list."""
        try:
            await self.on_list(values, revision)
        except PASSING as exc:
            raise _HandlerFailed(exc) from exc
        except Exception:
            log.exception(
                "%s: handling the list of %s at revision %d failed; going on without it",
                self.what,
                self.prefix,
                revision,
            )

    async def _handle(self, event: WatchEvent) -> None:
        """``on_event``; an error that passes goes up (the event is delivered again later), anything
        else is logged and the event skipped. Either way ``self.revision`` says where to resume."""
        if event.revision > (self.revision or 0):
            self._skipped.clear()
        self.revision = event.revision
        if event.key in self._skipped:
            return  # skipped before, delivered again by a resumed watch
        try:
            await self.on_event(event)
        except PASSING as exc:
            raise _HandlerFailed(exc) from exc
        except Exception:
            log.exception(
                "%s: handling %s %s at revision %d failed; skipping that event",
                self.what,
                event.kind,
                event.key,
                event.revision,
            )
            self._skipped.add(event.key)
