"""Who fires a federation-wide tick, decided against a real etcd by in-process schedulers whose
door is in memory and whose store and member list are stand-ins (no clock waiting: ticks are called
directly)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.domain.causes import Decision, RunAsk
from orchestrator.domain.states import RunStatus
from orchestrator.errors import DatabaseUnavailable, EtcdUnavailable
from orchestrator.federation import keys
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.records import ScheduleRecord
from orchestrator.metrics import Metrics
from orchestrator.scheduling import federation as federation_scheduler
from orchestrator.scheduling.book import ScheduleBook, due_key
from orchestrator.scheduling.federation import FederationScheduler
from orchestrator.scheduling.federation_catchup import NOBODY_ALIVE
from tests import servers
from tests.unit.memory_door import MemoryDoor


class FakeStore:
    def __init__(self, pipelines: set[str]) -> None:
        self.pipelines = pipelines
        self.database_away = False

    async def get_pipeline(self, name: str) -> object | None:
        return object() if name in self.pipelines else None

    async def get_run(self, run_id: str) -> SimpleNamespace:
        if self.database_away:
            raise DatabaseUnavailable("the database did not answer")
        return SimpleNamespace(status=RunStatus.SUCCEEDED)  # what the scheduler reads of a RunView


class Members:
    def __init__(self, live: dict[str, dict[str, str]], started_at: dict[str, str] | None = None) -> None:
        self.live_labels = live
        self.started_at = started_at or {}

    async def live(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "labels": labels,
                "started_at": self.started_at.get(name, "2020-01-01T00:00:00+00:00"),
            }
            for name, labels in self.live_labels.items()
        ]


class Unreachable(Members):
    """etcd goes away just after the tick was claimed."""

    async def live(self) -> list[dict[str, Any]]:
        raise EtcdUnavailable("etcd is unreachable (tried 127.0.0.1:1: connection refused)")


class Registrations:
    def __init__(self, instances: list[str] | None) -> None:
        self.instances = instances

    async def pipeline(self, name: str) -> dict[str, Any] | None:
        return None if self.instances is None else {"name": name, "instances": self.instances}


class Jobs:
    def __init__(self) -> None:
        self.armed: list[str] = []

    def arm(self, job_id: str, *args: Any) -> None:
        self.armed.append(job_id)

    def forget(self, job_id: str) -> None:
        pass

    def next_run_times(self) -> dict[str, str]:
        return {}


@pytest.fixture
async def etcd(etcd: servers.EtcdServer) -> AsyncIterator[Etcd]:
    client = Etcd([(etcd.host, etcd.client_port)], timeout=2)
    yield client
    await client.close()


def instance(
    etcd: Etcd,
    name: str,
    pipelines: set[str],
    labels: dict[str, str] | None = None,
    members: Members | None = None,
    registry: Registrations | None = None,
) -> FederationScheduler:
    settings = SimpleNamespace(instance_name=name, labels=labels or {})
    return FederationScheduler(
        settings,  # type: ignore[arg-type]
        etcd,
        Jobs(),  # type: ignore[arg-type]
        MemoryDoor(f"{name}-run", instance=name),
        FakeStore(pipelines),  # type: ignore[arg-type]
        members or Members({}),  # type: ignore[arg-type]
        registry or Registrations([]),  # type: ignore[arg-type]
    )


def door(fs: FederationScheduler) -> MemoryDoor:
    assert isinstance(fs.door, MemoryDoor)
    return fs.door


async def new_schedule(etcd: Etcd, pipeline: str, age: timedelta, placement: dict | None = None) -> dict:
    """A schedule created ``age`` before the start of the current minute (so a known number of
    ticks has passed since)."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    schedule = {
        "id": uuid.uuid4().hex,
        "pipeline": pipeline,
        "cron": "* * * * *",
        "timezone": "UTC",
        "placement": placement or {"labels": {}},
        "created_by": "test",
        "created_at": (minute - age).isoformat(),
    }
    await ScheduleBook(etcd).create(schedule)
    return schedule


async def settled_ticks(etcd: Etcd, schedule_id: str, count: int) -> list[dict]:
    book = ScheduleBook(etcd)
    for _ in range(100):
        ticks = await book.recent_ticks(schedule_id, limit=50)
        if len(ticks) >= count and ticks[0]["outcome"] != "claimed" and "run_status" in ticks[0]:
            return ticks
        await asyncio.sleep(0.05)
    return ticks


async def test_many_instances_racing_for_a_tick_fire_it_once_and_record_the_gap(etcd: Etcd) -> None:
    schedule = await new_schedule(etcd, "p", age=timedelta(minutes=5, seconds=30))
    racers = [instance(etcd, f"racer{i}", {"p"}) for i in range(6)]
    await asyncio.gather(*(r._tick(schedule["id"]) for r in racers))
    started = [r.instance for r in racers if door(r).started]
    assert len(started) == 1
    ticks = await settled_ticks(etcd, schedule["id"], 6)
    newest, *missed = ticks
    assert newest["outcome"] == "fired" and newest["instance"] == started[0]
    assert newest["run_id"] == f"{started[0]}-run1" and newest["run_status"] == "succeeded"
    # The five minutes since the schedule was created had no record: skipped, and why.
    assert len(missed) == 5 and all(t["outcome"] == "skipped" and t["reason"] == NOBODY_ALIVE for t in missed)
    due = [datetime.fromisoformat(t["due_at"]) for t in ticks]
    assert all(later - earlier == timedelta(minutes=1) for later, earlier in zip(due, due[1:], strict=False))
    # A tick already decided is never run again.
    await asyncio.gather(*(r._tick(schedule["id"]) for r in racers))
    assert sum(len(door(r).started) for r in racers) == 1
    await asyncio.gather(*(r.close() for r in racers))


async def test_placement_and_a_previous_run_still_going_elsewhere(etcd: Etcd) -> None:
    schedule = await new_schedule(etcd, "p", timedelta(seconds=90), {"labels": {"role": "central"}})
    # The previous tick was fired elsewhere, whose run has not reported its end yet.
    book = ScheduleBook(etcd)
    previous = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    await book.claim(schedule["id"], previous, {"outcome": "fired", "instance": "busy", "run_id": "busy-run"})
    edge = instance(etcd, "edge", {"p"}, {"role": "edge"})
    central = instance(etcd, "central", {"p"}, {"role": "central"}, members=Members({"busy": {}}))
    await asyncio.gather(edge._tick(schedule["id"]), central._tick(schedule["id"]))
    assert door(edge).started == [] and door(central).started == []
    for _ in range(100):
        tick = (await book.recent_ticks(schedule["id"], limit=1))[0]
        if tick["outcome"] != "claimed":
            break
        await asyncio.sleep(0.05)
    assert tick["outcome"] == "skipped" and tick["instance"] == "central"
    assert tick["reason"] == "previous run busy-run still running on busy"
    await asyncio.gather(edge.close(), central.close())


async def test_observers_record_ticks_no_live_instance_can_fire(
    etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(federation_scheduler, "OBSERVER_DELAY", 0.0)
    book = ScheduleBook(etcd)
    cases = [
        (Registrations(None), Members({}), "pipeline p is not initialised on any eligible instance"),
        (
            Registrations(["gone"]),
            Members({}),
            "no eligible instance was alive (p is on gone, which is down)",
        ),
        (
            Registrations(["alive"]),
            Members({"alive": {"role": "edge"}}),
            "pipeline p is not initialised on any eligible instance",
        ),
        (Registrations(["alive"]), Members({"alive": {"role": "central"}}), None),  # it fires itself
    ]
    for registry, members, reason in cases:
        schedule = await new_schedule(etcd, "p", timedelta(seconds=1), {"labels": {"role": "central"}})
        observer = instance(etcd, "observer", set(), members=members, registry=registry)
        await observer._tick(schedule["id"])
        ticks = await book.recent_ticks(schedule["id"])
        if reason is None:
            assert ticks == []
        else:
            assert [(t["outcome"], t["reason"], t["recorded_by"]) for t in ticks] == [
                ("skipped", reason, "observer")
            ]
        await observer.close()


async def test_ticks_fire_again_at_once_after_etcd_lost_the_history_lease(etcd: Etcd) -> None:
    """E.g. etcd restored from a backup: the lease the instance shares between its tick records is
    gone, and the next claim replaces it instead of failing for the rest of the hour."""
    schedule = await new_schedule(etcd, "p", age=timedelta(minutes=1))
    racer = instance(etcd, "racer", {"p"})
    assert [s.id for s in await racer.book.all() if s.id == schedule["id"]] == [schedule["id"]]
    earlier = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    assert await racer.book.claim(schedule["id"], earlier, {"outcome": "skipped", "reason": "test"})
    lost = await racer.book.history_lease.get()
    await etcd.revoke_lease(lost)
    await racer._tick(schedule["id"])
    assert door(racer).pipelines() == ["p"]
    (tick,) = await settled_ticks(etcd, schedule["id"], 1)
    assert tick["outcome"] == "fired" and tick["run_status"] == "succeeded"
    kv = await etcd.get(keys.tick(schedule["id"], due_key(datetime.fromisoformat(tick["due_at"]))))
    assert kv is not None and kv.lease not in (0, lost)
    await racer.close()


async def decided(book: ScheduleBook, schedule_id: str, due: datetime | None = None) -> dict[str, Any]:
    """The newest tick (or the one at ``due``) once it is no longer ``claimed``."""
    for _ in range(100):
        tick = await book.tick(schedule_id, due) if due else (await book.recent_ticks(schedule_id, 1))[0]
        if tick is not None and tick["outcome"] != "claimed":
            return tick
        await asyncio.sleep(0.05)
    raise AssertionError(f"tick still claimed: {tick}")


async def previous_run_elsewhere(book: ScheduleBook, schedule: dict, instance: str) -> dict[str, Any]:
    """The previous minute's tick, fired by ``instance``, whose run has not reported its end."""
    previous = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    record = {"outcome": "fired", "instance": instance, "run_id": f"{instance}-run"}
    assert await book.claim(schedule["id"], previous, record)
    tick = await book.tick(schedule["id"], previous)
    assert tick is not None
    return tick


async def test_a_won_tick_gets_an_outcome_whatever_fails_after_the_claim(etcd: Etcd) -> None:
    book = ScheduleBook(etcd)
    # etcd away while deciding whether the previous run still goes: skipped, saying so.
    schedule = await new_schedule(etcd, "p", timedelta(seconds=90))
    await previous_run_elsewhere(book, schedule, "busy")
    winner = instance(etcd, "winner", {"p"}, members=Unreachable({}))
    await winner._tick(schedule["id"])
    tick = await decided(book, schedule["id"])
    assert tick["outcome"] == "skipped" and tick["instance"] == "winner"
    assert tick["reason"].startswith("etcd is unreachable (tried 127.0.0.1:1")
    await winner.close()
    # A bug in the door: skipped too, rather than claimed for the 7 days the key lives.
    schedule = await new_schedule(etcd, "p", timedelta(seconds=30))
    winner = instance(etcd, "winner", {"p"})

    door(winner).fail = RuntimeError("boom")
    await winner._tick(schedule["id"])
    tick = await decided(book, schedule["id"])
    assert tick["outcome"] == "skipped" and tick["reason"] == "internal error: boom"
    await winner.close()


async def test_recording_missed_ticks_is_best_effort_and_comes_after_the_run_started(
    etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule = await new_schedule(etcd, "p", age=timedelta(minutes=5, seconds=30))
    racer = instance(etcd, "racer", {"p"})
    order: list[str] = []
    request_run = racer.door.request_run

    async def started(ask: RunAsk) -> Decision:
        decision = await request_run(ask)
        order.append("run started")
        return decision

    async def etcd_away(*args: Any) -> None:
        order.append("gaps")
        raise EtcdUnavailable("etcd is unreachable")

    monkeypatch.setattr(racer.door, "request_run", started)
    monkeypatch.setattr(racer.book, "last_tick_before", etcd_away)
    await racer._tick(schedule["id"])
    (tick,) = await settled_ticks(etcd, schedule["id"], 1)
    assert tick["outcome"] == "fired" and tick["run_status"] == "succeeded"
    assert order == ["run started", "gaps"]  # the five missed ticks stay without a record
    await racer.close()


async def test_a_run_whose_instance_restarted_since_no_longer_blocks(etcd: Etcd) -> None:
    """Its report (``run_status``) died with the process; the instance is back under the same name."""
    book = ScheduleBook(etcd)
    schedule = await new_schedule(etcd, "p", timedelta(seconds=90))
    previous = await previous_run_elsewhere(book, schedule, "x")
    recorded = datetime.fromisoformat(previous["recorded_at"])
    due = datetime.fromisoformat(previous["due_at"]) + timedelta(minutes=1)
    # x started before the tick was recorded (the process that runs it), then after (a new one).
    for started, outcome in [
        (recorded - timedelta(seconds=1), "skipped"),
        (recorded + timedelta(seconds=1), "fired"),
    ]:
        members = Members({"x": {}}, started_at={"x": started.isoformat()})
        other = instance(etcd, "other", {"p"}, members=members)
        await etcd.delete(keys.tick(schedule["id"], due_key(due)))  # decide the same tick again
        await other._compete(ScheduleRecord.model_validate(schedule), due)
        tick = await decided(book, schedule["id"], due)
        assert tick["outcome"] == outcome and tick["instance"] == "other", tick
        if outcome == "skipped":
            assert tick["reason"] == "previous run x-run still running on x"
        await other.close()


async def test_a_run_whose_end_cannot_be_read_is_reported_unknown_and_does_not_block(etcd: Etcd) -> None:
    book = ScheduleBook(etcd)
    schedule = await new_schedule(etcd, "p", timedelta(seconds=30))
    first = instance(etcd, "first", {"p"})
    first.store.database_away = True  # type: ignore[attr-defined]
    due = datetime.now(UTC).replace(second=0, microsecond=0)
    await first._compete(ScheduleRecord.model_validate(schedule), due)
    (tick,) = await settled_ticks(etcd, schedule["id"], 1)
    assert tick["outcome"] == "fired" and tick["run_status"] == "unknown"
    # "unknown" is written once the run ended: the next tick fires, though "first" is alive.
    second = instance(etcd, "second", {"p"}, members=Members({"first": {}}))
    await second._compete(ScheduleRecord.model_validate(schedule), due + timedelta(minutes=1))
    tick = await decided(book, schedule["id"], due + timedelta(minutes=1))
    assert tick["outcome"] == "fired" and tick["instance"] == "second"
    await asyncio.gather(first.close(), second.close())


async def test_a_schedule_record_without_an_id_is_left_out_not_fatal(etcd: Etcd) -> None:
    bad = keys.schedule(f"not-mao-{uuid.uuid4().hex}")
    await etcd.put(bad, {"cron": "* * * * *"})  # written by hand (etcdctl), say
    watcher = instance(etcd, "watcher", set())
    try:
        await watcher.start()
        schedule = await new_schedule(etcd, "p", timedelta(seconds=1))
        for _ in range(100):
            if schedule["id"] in watcher.scheduler.armed:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        assert schedule["id"] in watcher.scheduler.armed  # type: ignore[attr-defined]
        assert bad not in [keys.schedule(s.id) for s in await watcher.book.all()]
        assert schedule["id"] in [s["id"] for s in await watcher.schedules()]
    finally:
        await watcher.close()
        await etcd.delete(bad)


async def test_the_fired_tick_observes_its_lag_and_the_loser_counts_lost(etcd: Etcd) -> None:
    schedule = await new_schedule(etcd, "p", age=timedelta(seconds=30))
    racers = [instance(etcd, f"lag{i}", {"p"}) for i in range(2)]
    for racer in racers:
        racer.metrics = Metrics()
    await asyncio.gather(*(r._tick(schedule["id"]) for r in racers))
    lag = [
        r.metrics.registry.get_sample_value("mao_schedule_lag_seconds_count", {"scope": "federation"})
        for r in racers
    ]
    lost = [
        r.metrics.registry.get_sample_value("mao_ticks_total", {"scope": "federation", "outcome": "lost"})
        for r in racers
    ]
    assert sorted(x or 0 for x in lag) == [0, 1] and sorted(x or 0 for x in lost) == [0, 1]
    fired = next(r for r in racers if door(r).started)
    assert (
        fired.metrics.registry.get_sample_value("mao_schedule_lag_seconds_sum", {"scope": "federation"}) >= 0
    )
    await asyncio.gather(*(r.close() for r in racers))
