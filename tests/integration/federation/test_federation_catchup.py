"""Catch-up of federation-wide schedules after the whole federation was down, against a real etcd:
in-process schedulers (the door in memory, stand-in store and members, as test_tick_decisions.py) with a fake
clock come back at the same moment; exactly one of them decides and applies the catch-up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.federation import keys
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.records import ScheduleRecord
from orchestrator.metrics import Metrics
from orchestrator.scheduling.book import ScheduleBook
from orchestrator.scheduling.federation import FederationScheduler
from orchestrator.scheduling.federation_catchup import catch_up_all
from orchestrator.scheduling.ticks import Clock
from tests import servers
from tests.unit.memory_door import MemoryDoor

from .test_tick_decisions import FakeStore, Jobs, Members, Registrations, door

# The fake clock when the instances come back: a */5 schedule last recorded a tick at 11:00 and the
# whole federation was down from 11:00:30, so 12 ticks (11:05 ... 12:00) have no record.
NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
MISSED = [datetime(2026, 6, 1, 11, 5, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(12)]


@pytest.fixture
async def etcd(etcd: servers.EtcdServer) -> AsyncIterator[Etcd]:
    client = Etcd([(etcd.host, etcd.client_port)], timeout=2)
    yield client
    await client.close()


def back(etcd: Etcd, name: str, pipelines: set[str], labels: dict[str, str] | None = None) -> FederationScheduler:
    settings = SimpleNamespace(instance_name=name, labels=labels or {})
    fs = FederationScheduler(
        settings,  # type: ignore[arg-type]
        etcd,
        Jobs(),  # type: ignore[arg-type]
        MemoryDoor(f"{name}-run", instance=name),
        FakeStore(pipelines),  # type: ignore[arg-type]
        Members({}),  # type: ignore[arg-type]
        Registrations([]),  # type: ignore[arg-type]
        clock=Clock.fixed(NOW),
    )
    fs.metrics = Metrics()
    return fs


async def down_for_an_hour(
    etcd: Etcd, placement: dict | None = None, pipeline: str = "p", **policy: Any
) -> dict[str, Any]:
    schedule = {
        "id": uuid.uuid4().hex,
        "pipeline": pipeline,
        "cron": "*/5 * * * *",
        "timezone": "UTC",
        "placement": placement or {"labels": {}},
        "overlap": "skip",
        "catchup": "latest",
        "catchup_window": None,
        "created_by": "test",
        "created_at": (NOW - timedelta(days=1)).isoformat(),
        **policy,
    }
    book = ScheduleBook(etcd)
    await book.create(schedule)
    last = {"outcome": "fired", "instance": "gone", "run_id": "r0", "run_status": "succeeded"}
    assert await book.claim(schedule["id"], NOW - timedelta(hours=1, seconds=30), last)
    return schedule


async def settled(etcd: Etcd, schedule_id: str, count: int) -> list[dict[str, Any]]:
    """The schedule's tick records, oldest first, once ``count`` of them exist and none is claimed
    or waiting for its run's end."""
    book = ScheduleBook(etcd)
    for _ in range(200):
        ticks = list(reversed(await book.recent_ticks(schedule_id, limit=100)))
        done = all(
            t["outcome"] not in ("claimed",) and (t["outcome"] != "fired" or "run_status" in t) for t in ticks
        )
        if len(ticks) >= count and done:
            return ticks
        await asyncio.sleep(0.05)
    return ticks


def missed_count(fs: FederationScheduler) -> float:
    value = fs.metrics.registry.get_sample_value(
        "mao_ticks_total", {"scope": "federation", "outcome": "missed"}
    )
    return value or 0.0


async def test_latest_one_instance_of_three_runs_the_latest_missed_tick_once(etcd: Etcd) -> None:
    schedule = await down_for_an_hour(etcd)
    three = [back(etcd, f"back{i}", {"p"}) for i in range(3)]
    await asyncio.gather(*(catch_up_all(fs, [ScheduleRecord.model_validate(schedule)]) for fs in three))
    ticks = await settled(etcd, schedule["id"], 13)
    started = [fs for fs in three if door(fs).started]
    assert len(started) == 1 and door(started[0]).pipelines() == ["p"]
    winner = started[0].instance
    due = [datetime.fromisoformat(t["due_at"]) for t in ticks[1:]]
    assert due == MISSED
    *missed, latest = ticks[1:]
    assert {t["outcome"] for t in missed} == {"missed"}
    assert all("superseded by the catch-up run of 2026-06-01T12:00:00+00:00" in t["reason"] for t in missed)
    assert "the whole federation was down" in missed[0]["reason"]
    assert latest["outcome"] == "fired" and latest["instance"] == winner and latest["run_status"] == "succeeded"
    assert latest["reason"].startswith("catch-up for ticks missed since 2026-06-01T11:05:00+00:00")
    assert sum(missed_count(fs) for fs in three) == 11
    decision = await etcd.get(keys.catchup(schedule["id"]))
    assert decision is not None and decision.value["instance"] == winner and decision.value["ticks"] == 12
    # Coming back again (or another instance later) finds nothing left to decide.
    again = back(etcd, "later", {"p"})
    await catch_up_all(again, [ScheduleRecord.model_validate(schedule)])
    assert door(again).started == []
    await asyncio.gather(*(fs.close() for fs in [*three, again]))


async def test_all_within_the_window_runs_each_tick_in_order_on_one_instance(etcd: Etcd) -> None:
    # The window keeps the ticks of the last 16 minutes: 11:45, 11:50, 11:55, 12:00.
    schedule = await down_for_an_hour(etcd, catchup="all", catchup_window=16 * 60)
    three = [back(etcd, f"back{i}", {"p"}) for i in range(3)]
    await asyncio.gather(*(catch_up_all(fs, [ScheduleRecord.model_validate(schedule)]) for fs in three))
    ticks = (await settled(etcd, schedule["id"], 13))[1:]
    started = [fs for fs in three if door(fs).started]
    assert len(started) == 1 and door(started[0]).pipelines() == ["p"] * 4
    assert [t["outcome"] for t in ticks] == ["missed"] * 8 + ["fired"] * 4
    assert all("older than the catch-up window (960 s)" in t["reason"] for t in ticks[:8])
    assert [t["reason"] for t in ticks[8:]] == [f"catch-up {i} of 4 (catchup 'all')" for i in range(1, 5)]
    assert [t["run_id"] for t in ticks[8:]] == [f"{started[0].instance}-run{i}" for i in range(1, 5)]
    await asyncio.gather(*(fs.close() for fs in three))


async def test_none_records_every_missed_tick_and_ineligible_instances_decide_nothing(etcd: Etcd) -> None:
    schedule = await down_for_an_hour(etcd, {"labels": {"role": "central"}}, catchup="none")
    edge = back(etcd, "edge", {"p"}, {"role": "edge"})  # not eligible: placement
    bare = back(etcd, "bare", set(), {"role": "central"})  # not eligible: pipeline not initialised
    typed = ScheduleRecord.model_validate(schedule)
    await asyncio.gather(catch_up_all(edge, [typed]), catch_up_all(bare, [typed]))
    assert await etcd.get(keys.catchup(schedule["id"])) is None
    central = back(etcd, "central", {"p"}, {"role": "central"})
    await catch_up_all(central, [ScheduleRecord.model_validate(schedule)])
    ticks = (await settled(etcd, schedule["id"], 13))[1:]
    assert [t["outcome"] for t in ticks] == ["missed"] * 12
    assert all("catchup 'none'" in t["reason"] and t["recorded_by"] == "central" for t in ticks)
    assert door(central).started == [] and missed_count(central) == 12
    await asyncio.gather(*(fs.close() for fs in (edge, bare, central)))


async def test_a_schedule_from_before_catchup_is_left_to_the_gap_records(etcd: Etcd) -> None:
    schedule = await down_for_an_hour(etcd)
    del schedule["catchup"]
    fs = back(etcd, "old", {"p"})
    await catch_up_all(fs, [ScheduleRecord.model_validate(schedule)])
    assert door(fs).started == [] and await etcd.get(keys.catchup(schedule["id"])) is None
    await fs.close()


async def test_an_instance_catches_up_at_its_start(etcd: Etcd) -> None:
    """The wiring: the first list of schedules after start triggers the catch-up."""
    schedule = await down_for_an_hour(etcd, pipeline=f"p-{uuid.uuid4().hex[:6]}")
    fs = back(etcd, "starting", {schedule["pipeline"]})
    await fs.start()
    try:
        ticks = await settled(etcd, schedule["id"], 13)
        assert [t["outcome"] for t in ticks[1:]] == ["missed"] * 11 + ["fired"]
        assert door(fs).pipelines() == [schedule["pipeline"]]
    finally:
        await fs.close()


async def test_overlap_allow_fires_although_the_previous_run_still_goes_elsewhere(etcd: Etcd) -> None:
    """Federation-wide ``allow``: the tick's winner does not wait for the previous tick's run on
    another instance (each instance writes its own node branches); the tick still runs once."""
    schedule = await down_for_an_hour(etcd, overlap="allow", catchup="none")
    book = ScheduleBook(etcd)
    previous = NOW - timedelta(seconds=30)
    await book.claim(schedule["id"], previous, {"outcome": "fired", "instance": "busy", "run_id": "busy-run"})
    racers = [back(etcd, f"racer{i}", {"p"}) for i in range(3)]
    for fs in racers:
        fs.membership = Members({"busy": {}})  # type: ignore[assignment]
    due = previous + timedelta(minutes=5)
    await asyncio.gather(*(fs._compete(ScheduleRecord.model_validate(schedule), due) for fs in racers))
    started = [fs for fs in racers if door(fs).started]
    assert len(started) == 1
    for _ in range(100):
        tick = await book.tick(schedule["id"], due)
        if tick and tick["outcome"] != "claimed":
            break
        await asyncio.sleep(0.05)
    assert tick is not None and tick["outcome"] == "fired" and tick["instance"] == started[0].instance
    await asyncio.gather(*(fs.close() for fs in racers))
