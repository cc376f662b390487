"""The gateway's bounds, and the per-key write rate limiter.

Bounds (documented in docs/gateway.md): a key of at most 256 characters and 8 segments
(``namespace``), a value of at most 64 KiB as compact JSON (413) nesting arrays and objects at most
``MAX_NESTING`` levels deep (400; insights too), at most 1000 entries per
``/inspect`` (then ``truncated: true``), and on each instance at most ``MAO_GATEWAY_RATE`` writes per
second to one key with bursts of up to ``MAO_GATEWAY_BURST`` (429 with ``Retry-After``). Across all
keys, each instance accepts at most ``MAO_GATEWAY_BYTES_PER_SECOND`` bytes of values and
``MAO_GATEWAY_ENTRIES_PER_SECOND`` entries a second, with bursts of ``BUDGET_BURST_SECONDS`` of
either (429): distinct keys cannot grow etcd faster than that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ..errors import TooManyRequests
from ..federation.values import MAX_NESTING as MAX_NESTING  # re-exported: the gateway's own limit
from ..federation.values import shape_problem

MAX_VALUE_BYTES = 64 * 1024
MAX_INSPECT_ENTRIES = 1000
# What one /inspect answer carries at most (values as JSON); then ``truncated: true``.
MAX_INSPECT_BYTES = 8 * 1024 * 1024
BUDGET_BURST_SECONDS = 4.0
# Buckets are pruned once there are this many, at most once every PRUNE_EVERY seconds (a prune
# walks them all). Those of keys idle long enough to be full again go, and at most PRUNE_IDLE
# seconds of idleness are asked for: with a slow rate a bucket takes long to fill, and waiting
# for that would let memory grow with every distinct key.
PRUNE_AT = 10_000
PRUNE_EVERY = 5.0
PRUNE_IDLE = 60.0


def nested_too_deeply(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels deep (checked level by
    level, without recursion): the same bound every reader of etcd applies (``federation.values``)."""
    problem = shape_problem(value, limit, check_strings=False)
    return problem is not None


class RateLimiter:
    """A token bucket per key, in memory: ``rate`` tokens a second, at most ``burst`` saved up.

    Per instance, on purpose: sharing buckets through etcd would cost a round trip per write, and a
    client spreading its writes over several instances is still bounded by each one. Memory is
    bounded by the keys written in the last ``PRUNE_IDLE`` + ``PRUNE_EVERY`` seconds; a key idle for
    ``PRUNE_IDLE`` seconds may find its bucket full again before the rate alone would refill it."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._next_prune = -math.inf

    def take(self, key: str) -> None:
        """Spend one token of ``key``'s bucket, or raise ``TooManyRequests`` saying when to retry."""
        now = self.clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            wait = (1 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            raise TooManyRequests(
                f"too many writes to key {key!r}: at most {self.rate:g} per second (bursts of "
                f"{self.burst:g}) on this instance; retry in {wait:.2f} s",
                retry_after=round(wait, 3),
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > PRUNE_AT and now >= self._next_prune:
            self._prune(now)

    def _prune(self, now: float) -> None:
        self._next_prune = now + PRUNE_EVERY
        idle = min(self.burst / self.rate, PRUNE_IDLE)
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < idle}


class WriteBudget:
    """This instance's budget for gateway writes across all keys: two token buckets, bytes and
    entries, each refilled at its rate a second and holding ``BUDGET_BURST_SECONDS`` of it."""

    def __init__(
        self, bytes_per_second: float, entries_per_second: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rates = (float(bytes_per_second), float(entries_per_second))
        self.bursts = tuple(max(rate * BUDGET_BURST_SECONDS, 1.0) for rate in self.rates)
        self.clock = clock
        self._tokens = list(self.bursts)
        self._then = clock()

    def take(self, size: int) -> None:
        """Spend ``size`` bytes and one entry, or raise ``TooManyRequests`` (nothing spent)."""
        now = self.clock()
        elapsed, self._then = now - self._then, now
        self._tokens = [
            min(b, t + elapsed * r) for t, r, b in zip(self._tokens, self.rates, self.bursts, strict=True)
        ]
        wants = (float(min(size, self.bursts[0])), 1.0)
        short = [
            (want - t) / r for want, t, r in zip(wants, self._tokens, self.rates, strict=True) if t < want
        ]
        if short:
            wait = max(short)
            raise TooManyRequests(
                f"this instance's gateway takes at most {self.rates[0]:g} bytes and {self.rates[1]:g} "
                f"entries a second across all keys; retry in {wait:.2f} s",
                retry_after=round(wait, 3),
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        self._tokens = [t - want for t, want in zip(self._tokens, wants, strict=True)]
