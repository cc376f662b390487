"""The one lifecycle (services.py) and the one backoff (retry.Backoff), without a real clock."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import EtcdUnavailable
from orchestrator.retry import Backoff
from orchestrator.services import LoopService, Periodic, Service

# A bound on how long a test waits for something that happens at once: only a hang reaches it.
HANG = 30.0


class Scripted(LoopService):
    """Decides from a script: a string is a sentence, an exception is raised, None says nothing.
    Records the waits instead of waiting them, until the script is played."""

    what = "scripted loop"
    interval = 5.0
    retry_first = 1.0
    retry_cap = 8.0
    draw = staticmethod(lambda: 1.0)  # no jitter: the bound itself

    def __init__(self, script: list[str | Exception | None]) -> None:
        self.script = list(script)
        self.waits: list[float] = []

    async def run_once(self) -> str | None:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def _wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        if not self.script:
            await asyncio.Event().wait()  # the script is over: wait for close()
        await asyncio.sleep(0)


async def play(service: Scripted) -> list[float]:
    """Start, let the whole script play (one wait before it and one after each decision), close."""
    expected = 1 + len(service.script)
    await service.start()
    async with asyncio.timeout(HANG):
        while len(service.waits) < expected:
            await asyncio.sleep(0)
    await service.close()
    return service.waits


async def test_failures_back_off_with_growing_waits_and_a_success_resets_them() -> None:
    boom = RuntimeError("boom")
    service = Scripted([boom, boom, boom, boom, boom, "done", boom])
    waits = await play(service)
    # first_wait, five failures (1, 2, 4, 8, capped at 8), the interval after a success, 1 again.
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 5.0, 1.0]
    assert service.failures == 1


async def test_a_sentence_is_logged_per_decision_and_nothing_for_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.services")
    await play(Scripted(["compacted up to 7", None, "compacted up to 9"]))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == ["scripted loop: compacted up to 7", "scripted loop: compacted up to 9"]


async def test_a_failure_is_loud_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrator.services")
    away = EtcdUnavailable("etcd is unreachable")
    await play(Scripted([away, away, away, "ok"]))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "etcd is unreachable" in warnings[0].getMessage()
    assert any("working again after 3 failure(s)" in r.getMessage() for r in caplog.records)


async def test_quiet_failures_stay_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrator.services")
    service = Scripted([EtcdUnavailable("away"), "ok"])
    service.quiet = (EtcdUnavailable,)
    await play(service)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class Sleepy(LoopService):
    """Waits for real: ``interval`` is far longer than any test."""

    what = "sleepy loop"
    interval = 3600.0

    def __init__(self) -> None:
        self.decisions = 0
        self.decided = asyncio.Event()

    async def run_once(self) -> str | None:
        self.decisions += 1
        self.decided.set()
        return None


async def test_close_during_a_wait_returns_promptly() -> None:
    service = Sleepy()
    await service.start()
    async with asyncio.timeout(HANG):
        await service.decided.wait()
        assert service.running
        await service.close()
    assert not service.running
    await service.close()  # a second close is harmless


async def test_wake_cuts_a_wait_short() -> None:
    service = Sleepy()
    await service.start()
    async with asyncio.timeout(HANG):
        await service.decided.wait()
        service.decided.clear()
        service.wake()
        await service.decided.wait()
    assert service.decisions == 2
    await service.close()


async def test_close_waits_for_a_decision_being_made_to_end() -> None:
    ended = asyncio.Event()
    entered = asyncio.Event()

    async def slow_pass() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    service = Periodic("slow pass", 3600.0, slow_pass)
    await service.start()
    async with asyncio.timeout(HANG):
        await entered.wait()
        await service.close()
    assert ended.is_set()


async def test_periodic_waits_first_wait_before_its_first_pass() -> None:
    passes: list[int] = []

    async def count() -> None:
        passes.append(1)

    service = Periodic("counting", 3600.0, count, first_wait=3600.0)
    await service.start()
    await asyncio.sleep(0.05)
    assert passes == []
    service.wake()  # a wake counts as the wait's end
    async with asyncio.timeout(HANG):
        while not passes:
            await asyncio.sleep(0.01)
    await service.close()


def test_loop_services_are_services() -> None:
    assert isinstance(Sleepy(), Service)
    assert isinstance(Periodic("x", 1.0, Sleepy().run_once), Service)


@given(
    first=st.floats(min_value=0.001, max_value=100.0),
    cap=st.floats(min_value=0.001, max_value=1000.0),
    failures=st.integers(min_value=1, max_value=200),
)
def test_backoff_without_jitter_grows_from_first_to_cap_and_resets(
    first: float, cap: float, failures: int
) -> None:
    backoff = Backoff(first, cap, jitter=False)
    waits = [backoff.next() for _ in range(failures)]
    assert waits[0] == min(first, cap)
    assert all(a <= b for a, b in zip(waits, waits[1:], strict=False))
    assert all(0 < w <= cap for w in waits)
    backoff.reset()
    assert backoff.next() == waits[0]


@given(
    first=st.floats(min_value=0.001, max_value=100.0),
    failures=st.integers(min_value=1, max_value=200),
    draw=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_with_jitter_stays_under_the_bound_it_says(first: float, failures: int, draw: float) -> None:
    backoff = Backoff(first, 30.0, draw=lambda: draw)
    for _ in range(failures - 1):
        backoff.next()
    bound = backoff.peek()
    assert 0.0 <= backoff.next() <= bound <= 30.0


@given(
    first=st.floats(min_value=0.001, max_value=100.0),
    cap=st.floats(min_value=0.001, max_value=1000.0),
    factor=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    failures=st.integers(min_value=1, max_value=80),
)
def test_backoff_without_jitter_waits_what_a_hand_written_loop_waited(
    first: float, cap: float, factor: float, failures: int
) -> None:
    """The loops that moved to Backoff wrote ``delay = first`` ... ``delay = min(delay * factor, cap)``;
    the waits are the same (to rounding). Their first wait was never above the cap: same here."""
    backoff = Backoff(first, cap, jitter=False, factor=factor)
    delay = first
    for _ in range(failures):
        assert backoff.next() == pytest.approx(min(delay, cap), rel=1e-9)
        delay = min(delay * factor, cap)


def test_backoff_refuses_a_shrinking_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(1.0, 10.0, factor=0.5)
