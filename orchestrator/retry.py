"""One backoff helper: exponential growth with full jitter, capped.

Full jitter (a uniform draw between 0 and the exponential bound) spreads retries of many clients that
failed together, which the plain exponential does not (AWS Architecture Blog, "Exponential Backoff
And Jitter"). New retry loops use this instead of their own arithmetic.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

CAP = 600.0  # ten minutes: beyond that a retry is a new run, not a retry


def bound(retry: int, base: float, cap: float = CAP, factor: float = 2.0) -> float:
    """The upper bound of the wait before retry number ``retry`` (1-based): base * factor**(retry-1), capped."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    # min() first on the exponent: 2**1000 would overflow a float long before the cap matters.
    return min(cap, base * factor ** min(retry - 1, 64))


def backoff(retry: int, base: float, cap: float = CAP, draw: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``retry``: uniform in [0, bound(retry, base, cap)]."""
    return draw() * bound(retry, base, cap)


class Backoff:
    """The waits of one retry loop: ``next()`` after each failure in a row, ``reset()`` after a success.

    ``jitter=False`` waits the bound itself (``first`` doubling up to ``cap``): for loops whose waits
    are documented as such, and for one instance's own retries, where there is no herd to spread.
    ``factor`` replaces the doubling (1.5 for a lock's polls, which grow gentler)."""

    def __init__(
        self,
        first: float,
        cap: float = CAP,
        *,
        jitter: bool = True,
        factor: float = 2.0,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if factor < 1.0:
            raise ValueError("a backoff does not shrink: factor must be at least 1")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.draw = draw
        self.failures = 0

    def next(self) -> float:
        """The wait before the next try, one failure more than the last call said."""
        self.failures += 1
        limit = bound(self.failures, self.first, self.cap, self.factor)
        return self.draw() * limit if self.jitter else limit

    def peek(self) -> float:
        """The bound ``next()`` would draw from, without counting a failure (to say it in a log line)."""
        return bound(self.failures + 1, self.first, self.cap, self.factor)

    def reset(self) -> None:
        self.failures = 0


async def persist(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    errors: tuple[type[Exception], ...],
    on_error: Callable[[Exception, float], None],
) -> T:
    """``call()`` until it returns, waiting ``backoff.next()`` after each of ``errors`` (others go up).
    ``on_error(error, wait)`` is told before each wait; it may raise to give up instead."""
    while True:
        try:
            return await call()
        except errors as exc:
            wait = backoff.next()
            on_error(exc, wait)
            await asyncio.sleep(wait)
