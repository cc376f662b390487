"""Admission's decisions (runs/admission.py) and pool slots (runs/pools.py), without I/O: the order
queued runs start in, the instance's limit, one run per pipeline, overlap 'queue' and cancelling."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.config import parse_pools
from orchestrator.domain.queue import Ticket, in_order
from orchestrator.runs.admission import Admission, Busy, RunInProgress, admissible
from orchestrator.runs.pools import Pools, Slots

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ticket(run_id: str, pipeline: str, priority: int = 0, age: int = 0, tick: int | None = None) -> Ticket:
    """``age``: seconds after T0 it was queued (smaller is older)."""
    tick_at = T0 + timedelta(hours=tick) if tick is not None else None
    return Ticket(run_id, pipeline, "manual", priority, T0 + timedelta(seconds=age), tick_at)


def ids(tickets: list[Ticket]) -> list[str]:
    return [t.run_id for t in tickets]


def test_higher_priority_first_then_older() -> None:
    queue = [ticket("old-low", "a", 0, 1), ticket("new-high", "b", 5, 9), ticket("older-low", "c", 0, 0)]
    assert ids(in_order(queue)) == ["new-high", "older-low", "old-low"]
    assert ids(admissible(queue, busy=[], running=0, limit=None)) == ["new-high", "older-low", "old-low"]


def test_the_limit_counts_running_runs() -> None:
    queue = [ticket(f"r{i}", f"p{i}", age=i) for i in range(4)]
    assert ids(admissible(queue, busy=["x", "y"], running=2, limit=2)) == []
    assert ids(admissible(queue, busy=["x"], running=1, limit=2)) == ["r0"]
    assert ids(admissible(queue, busy=[], running=0, limit=3)) == ["r0", "r1", "r2"]


def test_a_busy_pipeline_is_passed_over_not_waited_for() -> None:
    queue = [ticket("a1", "a", 9, 0), ticket("b1", "b", 0, 1)]
    # a's run is running: its queued run waits, b's starts although it ranks lower.
    assert ids(admissible(queue, busy=["a"], running=1, limit=2)) == ["b1"]


def test_one_run_per_pipeline_in_tick_order() -> None:
    base = [ticket(f"t{h}", "p", age=0, tick=h) for h in (3, 1, 2)]  # a backfill: same age, ticks apart
    assert ids(admissible(base, busy=[], running=0, limit=None)) == ["t1"]
    assert ids(in_order(base)) == ["t1", "t2", "t3"]


async def _launched(admission: Admission, started: list[str]) -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _admission(limit: int | None, started: list[str]) -> Admission:
    admission: Admission

    async def launch(t: Ticket) -> None:
        started.append(t.run_id)
        admission.started(t.run_id)

    admission = Admission(limit, launch)
    return admission


async def test_reserve_then_queue_then_admit_on_finish() -> None:
    started: list[str] = []
    admission = _admission(2, started)
    assert admission.reserve(ticket("r1", "a"), Busy.REFUSE) is True
    assert admission.reserve(ticket("r2", "b"), Busy.REFUSE) is True
    # The instance is full: two more wait, the higher priority first whatever its age.
    assert admission.reserve(ticket("r3", "c", 0, 1), Busy.REFUSE) is False
    assert admission.reserve(ticket("r4", "d", 7, 2), Busy.REFUSE) is False
    admission.enqueue([ticket("r3", "c", 0, 1), ticket("r4", "d", 7, 2)])
    assert [e["id"] for e in admission.listing()] == ["r4", "r3"]
    assert [e["position"] for e in admission.listing()] == [1, 2]
    assert "MAO_MAX_ACTIVE_RUNS=2" in admission.listing()[0]["waiting_for"]
    assert started == [] and admission.depth == 2
    admission.finished("r1")
    await _launched(admission, started)
    assert started == ["r4"] and admission.is_queued("r3") and admission.active_run("d") == "r4"
    admission.finished("r2")
    await _launched(admission, started)
    assert started == ["r4", "r3"] and admission.depth == 0


async def test_a_new_run_does_not_jump_the_queue() -> None:
    started: list[str] = []
    admission = _admission(1, started)
    assert admission.reserve(ticket("r1", "a"), Busy.REFUSE)
    admission.reserve(ticket("r2", "b", 5, 1), Busy.REFUSE)
    admission.enqueue([ticket("r2", "b", 5, 1)])
    admission.finished("r1")
    # r2 (priority 5) has room now; a newcomer of priority 1 waits behind it.
    assert admission.reserve(ticket("r3", "c", 1, 2), Busy.REFUSE) is False
    await _launched(admission, started)
    assert started == ["r2"]


async def test_busy_policies() -> None:
    admission = _admission(None, [])
    assert admission.reserve(ticket("r1", "p"), Busy.REFUSE)
    with pytest.raises(RunInProgress, match="already running"):
        admission.reserve(ticket("r2", "p"), Busy.REFUSE)
    # overlap 'queue': one waits behind the running run, the next is refused.
    assert admission.reserve(ticket("r2", "p", age=1), Busy.QUEUE_ONE) is False
    admission.enqueue([ticket("r2", "p", age=1)])
    with pytest.raises(RunInProgress, match="at most one waiting run"):
        admission.reserve(ticket("r3", "p", age=2), Busy.QUEUE_ONE)
    with pytest.raises(RunInProgress, match="has run r2 queued|already running"):
        admission.reserve(ticket("r3", "p", age=2), Busy.REFUSE)
    # A backfill queues any number.
    assert admission.reserve(ticket("r4", "p", age=3), Busy.QUEUE) is False
    assert admission.waiting_run("p") == "r2"
    assert "is running" in admission.listing()[0]["waiting_for"]


async def test_dropping_a_queued_run_and_waking_its_waiters() -> None:
    started: list[str] = []
    admission = _admission(1, started)
    admission.reserve(ticket("r1", "a"), Busy.REFUSE)
    admission.reserve(ticket("r2", "b", age=1), Busy.REFUSE)
    admission.enqueue([ticket("r2", "b", age=1)])
    leaving = admission.leaving("r2")
    assert leaving is not None and not leaving.is_set()
    dropped = admission.drop("r2")
    assert dropped is not None and dropped.run_id == "r2" and leaving.is_set()
    assert admission.drop("r2") is None and not admission.is_queued("r2")
    admission.finished("r1")
    await _launched(admission, started)
    assert started == []


async def test_closing_stops_admitting() -> None:
    started: list[str] = []
    admission = _admission(1, started)
    admission.reserve(ticket("r1", "a"), Busy.REFUSE)
    admission.enqueue([ticket("r2", "b", age=1)])
    await admission.close()
    admission.finished("r1")
    await _launched(admission, started)
    assert started == [] and admission.is_queued("r2")


async def test_slots_go_to_the_highest_priority_waiter() -> None:
    slots = Slots(1)
    order: list[str] = []
    await slots.acquire((0, "holder"))

    async def take(name: str, key: tuple[int, str]) -> None:
        async with slots.hold(key):
            order.append(name)
            await asyncio.sleep(0.01)

    low = asyncio.create_task(take("low", (0, "a")))
    high = asyncio.create_task(take("high", (-5, "b")))
    gone = asyncio.create_task(take("cancelled", (-9, "c")))
    await asyncio.sleep(0.01)
    assert slots.waiting == 3
    gone.cancel()
    slots.release()
    await asyncio.gather(low, high, gone, return_exceptions=True)
    assert order == ["high", "low"] and slots.used == 0 and slots.waiting == 0


async def test_never_more_holders_than_slots() -> None:
    slots = Slots(2)
    holding = peak = 0

    async def work() -> None:
        nonlocal holding, peak
        async with slots.hold((0,)):
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.005)
            holding -= 1

    await asyncio.gather(*(work() for _ in range(10)))
    assert peak == 2 and slots.used == 0


def test_pools_config_and_unknown_names() -> None:
    problems: list[str] = []
    assert parse_pools("gpu=1, heavy=2", problems) == {"gpu": 1, "heavy": 2} and problems == []
    assert parse_pools("", problems) == {}
    for bad in ("gpu", "gpu=0", "gpu=x", "=2", "gpu=1,gpu=2", "../x=1"):
        found: list[str] = []
        parse_pools(bad, found)
        assert found and all("MAO_POOLS" in p or "pool name" in p for p in found), (bad, found)
    pools = Pools({"gpu": 1})
    assert pools.unknown(["gpu", None, "tpu", "tpu"]) == ["tpu"]
    assert pools.usage() == {"gpu": {"slots": 1, "in_use": 0, "waiting": 0}}


async def test_a_run_that_could_not_start_is_queued_again_later() -> None:
    started: list[str] = []
    admission = _admission(None, started)
    assert admission.reserve(ticket("r1", "p"), Busy.REFUSE)
    # Its start met the database away: it gives its room back and waits, not admitted meanwhile.
    admission.requeue_later(ticket("r1", "p"), 0.05)
    assert admission.active_run("p") == "r1" and admission.is_queued("r1") and admission.listing() == []
    assert admission.reserve(ticket("r2", "q"), Busy.REFUSE) is True  # the room went back
    with pytest.raises(RunInProgress):
        admission.reserve(ticket("r3", "p"), Busy.REFUSE)
    await asyncio.sleep(0.1)
    await _launched(admission, started)
    assert started == ["r1"]


async def test_cancelling_a_run_waiting_to_be_queued_again() -> None:
    started: list[str] = []
    admission = _admission(None, started)
    admission.reserve(ticket("r1", "p"), Busy.REFUSE)
    admission.requeue_later(ticket("r1", "p"), 0.05)
    assert admission.drop("r1") is not None
    await asyncio.sleep(0.1)
    await _launched(admission, started)
    assert started == [] and admission.active_run("p") is None


def side(run_id: str, pipeline: str, priority: int = 0, age: int = 0) -> Ticket:
    """A run started with overlap ``allow``."""
    return Ticket(run_id, pipeline, "manual", priority, T0 + timedelta(seconds=age), side_by_side=True)


def test_a_side_by_side_run_is_admissible_although_its_pipeline_is_busy() -> None:
    queue = [side("a2", "a", age=1), ticket("a3", "a", age=2), side("a4", "a", age=3)]
    # a's run is running: both side-by-side runs may start, the plain one waits for the pipeline.
    assert ids(admissible(queue, busy=["a"], running=1, limit=None)) == ["a2", "a4"]
    # ... but the limit still counts them.
    assert ids(admissible(queue, busy=["a"], running=1, limit=2)) == ["a2"]


async def test_allow_starts_beside_the_running_run_and_waits_only_for_the_limit() -> None:
    started: list[str] = []
    admission = _admission(2, started)
    assert admission.reserve(ticket("r1", "p"), Busy.REFUSE) is True
    assert admission.reserve(side("r2", "p", age=1), Busy.ALLOW) is True  # beside r1
    assert admission.running_runs("p") == ["r1", "r2"] and admission.active_run("p") == "r1"
    # The instance is full: a third side-by-side run waits in the queue, not refused.
    assert admission.reserve(side("r3", "p", age=2), Busy.ALLOW) is False
    admission.enqueue([side("r3", "p", age=2)])
    assert admission.active_runs("p") == ["r1", "r2", "r3"]
    assert "MAO_MAX_ACTIVE_RUNS=2" in admission.listing()[0]["waiting_for"]
    # A plain run still finds the pipeline busy.
    with pytest.raises(RunInProgress):
        admission.reserve(ticket("r4", "p", age=3), Busy.REFUSE)
    admission.finished("r1")  # room: r3 starts although r2 of its pipeline still runs
    await _launched(admission, started)
    assert started == ["r3"] and admission.running_runs("p") == ["r2", "r3"]
