"""One backoff helper: exponential growth with full jitter, capped.

Full jitter (a uniform draw between 0 and the exponential bound) spreads retries of many clients that
failed together, which the plain exponential does not (AWS Architecture Blog, "Exponential Backoff
And Jitter"). New retry loops use this instead of their own arithmetic.
"""

from __future__ import annotations

import random
from collections.abc import Callable

CAP = 600.0  # ten minutes: beyond that a retry is a new run, not a retry


def bound(retry: int, base: float, cap: float = CAP) -> float:
    """The upper bound of the wait before retry number ``retry`` (1-based): base * 2**(retry-1), capped."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    # min() first on the exponent: 2**1000 would overflow a float long before the cap matters.
    return min(cap, base * 2.0 ** min(retry - 1, 64))


def backoff(retry: int, base: float, cap: float = CAP, draw: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``retry``: uniform in [0, bound(retry, base, cap)]."""
    return draw() * bound(retry, base, cap)
