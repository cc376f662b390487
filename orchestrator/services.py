"""One lifecycle for every background part: the ``Service`` protocol and the ``LoopService`` base.

A service is started once and closed once (``Node`` starts an ordered list and closes it in reverse).
A ``LoopService`` is a service whose work is one decision repeated: ``run_once`` decides and returns
the one sentence worth logging about it (None: nothing worth saying), then the loop waits
``interval`` seconds, or less when ``wake()`` is called. A ``run_once`` that raises is a failure: the
loop waits ``retry.backoff`` (growing with each failure in a row, capped) and tries again; it never
ends for good. A failure is logged at warning once per streak of the same error (debug while it
repeats; debug throughout for ``quiet`` errors, such as etcd being away, which etcd's client reports
itself), and the recovery once. ``close`` cancels the loop and waits until it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from .errors import MaoError
from .retry import backoff
from .tasks import spawn

log = logging.getLogger(__name__)


@runtime_checkable
class Service(Protocol):
    """Something with a lifetime: ``start`` once, ``close`` once (also after a failed ``start``)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LoopService(ABC):
    """A background loop of decisions; subclasses set ``what`` and ``interval`` and write ``run_once``."""

    what: str = "background loop"  # names the loop in its task and in every line it logs
    interval: float = 60.0  # seconds between two decisions
    first_wait: float = 0.0  # seconds before the first decision (0: at start)
    retry_first: float = 1.0  # the first failure's backoff bound (retry.backoff's base)
    retry_cap: float | None = None  # the largest backoff bound (None: ``interval``)
    quiet: tuple[type[BaseException], ...] = ()  # failures logged at debug only
    draw: Callable[[], float] = staticmethod(random.random)  # backoff's jitter (tests fix it)

    _task: asyncio.Task[None] | None = None
    _woken: asyncio.Event | None = None
    failures: int = 0  # failures in a row, 0 after a success

    @abstractmethod
    async def run_once(self) -> str | None:
        """Decide once; the sentence to log about the decision, or None when there is nothing to say."""

    def next_wait(self) -> float:
        """The wait after a successful decision (``interval``; a loop may choose per decision)."""
        return self.interval

    async def start(self) -> None:
        if self._task is None:
            self._woken = asyncio.Event()
            self._task = spawn(self._loop(), name=self.what)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Cut the current wait short: decide now (e.g. the service the loop waited for is back)."""
        if self._woken is not None:
            self._woken.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        await self._wait(self.first_wait)
        problem: str | None = None
        while True:
            try:
                sentence = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop outlives any one bad decision
                self.failures += 1
                wait = backoff(self.failures, self.retry_first, self._cap(), self.draw)
                problem = self._failed(exc, wait, problem)
            else:
                if problem is not None:
                    log.info("%s: working again after %d failure(s)", self.what, self.failures)
                self.failures, problem = 0, None
                if sentence:
                    log.info("%s: %s", self.what, sentence)
                wait = self.next_wait()
            await self._wait(wait)

    def _cap(self) -> float:
        return self.interval if self.retry_cap is None else self.retry_cap

    def _failed(self, exc: Exception, wait: float, previous: str | None) -> str:
        """Log a failure (loudly once per streak of the same error); the problem, to compare with the next."""
        problem = exc.message if isinstance(exc, MaoError) else f"{type(exc).__name__}: {exc}"
        repeated = problem == previous or isinstance(exc, self.quiet)
        level = logging.DEBUG if repeated else logging.WARNING
        unexpected = not isinstance(exc, MaoError | asyncio.TimeoutError | OSError)
        log.log(
            level,
            "%s failed (%d in a row), trying again in %.1f s: %s",
            self.what,
            self.failures,
            wait,
            problem,
            exc_info=unexpected and not repeated,
        )
        return problem

    async def _wait(self, seconds: float) -> None:
        """Wait ``seconds``, or until ``wake()``; a wake during the decision before counts too."""
        woken = self._woken
        if woken is None:  # run outside ``start`` (a test calling _loop): plain sleep
            await asyncio.sleep(seconds)
            return
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # not wait_for: it can swallow close()'s cancel
                    await woken.wait()
        woken.clear()


class Periodic(LoopService):
    """A ``LoopService`` around one coroutine function (a pass that logs for itself)."""

    def __init__(
        self,
        what: str,
        interval: float,
        call: Callable[[], Awaitable[object]],
        *,
        first_wait: float = 0.0,
        quiet: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.what = what
        self.interval = interval
        self.first_wait = first_wait
        self.quiet = quiet
        self._call = call

    async def run_once(self) -> str | None:
        await self._call()
        return None


class Hooks:
    """A service made of two calls, for a part whose own methods are named otherwise (the runner's
    ``shutdown``) or that has only one side (a client that opens itself, a step at start)."""

    def __init__(
        self,
        start: Callable[[], Awaitable[object]] | None = None,
        close: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._start = start
        self._close = close

    async def start(self) -> None:
        if self._start is not None:
            await self._start()

    async def close(self) -> None:
        if self._close is not None:
            await self._close()
