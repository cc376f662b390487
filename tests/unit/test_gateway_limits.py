"""The per-key token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from orchestrator.errors import TooManyRequests
from orchestrator.gateway import limits
from orchestrator.gateway.limits import MAX_NESTING, RateLimiter, nested_too_deeply


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=5, burst=10, clock=clock)
    for _ in range(10):
        limiter.take("k")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("k")
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.extra["retry_after"] == pytest.approx(0.2)
    limiter.take("other")  # another key has its own bucket
    clock.now += 0.2  # one token back
    limiter.take("k")
    with pytest.raises(TooManyRequests):
        limiter.take("k")
    clock.now += 10  # refilled up to the burst, not beyond
    for _ in range(10):
        limiter.take("k")
    with pytest.raises(TooManyRequests):
        limiter.take("k")


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.4, burst=1, clock=clock)
    limiter.take("k")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("k")
    assert refused.value.headers["Retry-After"] == "3"  # 2.5 s


def test_idle_buckets_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "PRUNE_AT", 100)
    clock = Clock()
    limiter = RateLimiter(rate=5, burst=10, clock=clock)
    for i in range(100):
        limiter.take(f"old-{i}")
    clock.now += 60
    limiter.take("busy")
    limiter.take("new")
    assert len(limiter._buckets) <= 2


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for i in range(depth):
        value = [value, 1] if i % 2 else {"k": value, "other": "x"}
    return value


def test_nesting_is_measured_without_recursion() -> None:
    assert not nested_too_deeply(1) and not nested_too_deeply(None)
    assert not nested_too_deeply([]) and nested_too_deeply([], limit=0)
    assert not nested_too_deeply(nested(MAX_NESTING))
    assert nested_too_deeply(nested(MAX_NESTING + 1))
    assert nested_too_deeply(nested(100_000))  # far beyond what a recursive walk could take
    assert not nested_too_deeply([1, [2, [3]], {"a": {"b": 1}}], limit=3)
    assert nested_too_deeply([1, [2, [3, []]]], limit=3)


def test_a_prune_that_frees_nothing_is_not_repeated_on_every_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "PRUNE_AT", 100)
    clock = Clock()
    limiter = RateLimiter(rate=5, burst=10, clock=clock)
    prunes = 0
    real_prune = limiter._prune

    def counting(now: float) -> None:
        nonlocal prunes
        prunes += 1
        real_prune(now)

    monkeypatch.setattr(limiter, "_prune", counting)
    for i in range(1000):  # all within burst/rate seconds: none can go
        limiter.take(f"k{i}")
        clock.now += 0.001
    assert prunes == 1 and len(limiter._buckets) == 1000
    clock.now += limits.PRUNE_EVERY
    limiter.take("later")
    assert prunes == 2


def test_with_a_slow_rate_idle_buckets_still_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "PRUNE_AT", 100)
    clock = Clock()
    limiter = RateLimiter(rate=0.001, burst=10, clock=clock)  # a bucket fills in 10,000 s
    for i in range(200):
        limiter.take(f"old-{i}")
    clock.now += limits.PRUNE_IDLE
    limiter.take("new")
    assert list(limiter._buckets) == ["new"]
