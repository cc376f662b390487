"""The door (runs/door.py) against an in-memory engine: the overlap policies (``skip`` names the run
in the way, ``replace`` cancels and waits, ``queue`` makes room for one waiting run, ``allow`` starts
beside), how each cause is decided, and what a run's record keeps of its cause."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.causes import (
    Backfill,
    CatchUp,
    CronTick,
    DataTrigger,
    FederationTick,
    Fired,
    Manual,
    Queued,
    Refused,
    RunAsk,
    RunElsewhere,
    Skipped,
)
from orchestrator.errors import Conflict, DatabaseUnavailable
from orchestrator.runs import door as door_module
from orchestrator.runs.admission import Busy, RunInProgress
from orchestrator.runs.door import RunDoor, busy_for
from orchestrator.store.backfills import NewBackfill

TICK = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Engine:
    """The part of the run engine the door uses (``door.Runs``), in memory: ``running`` runs hold
    their pipeline, ``waiting`` waits behind them, a start under ``REFUSE`` of a busy pipeline is
    admission's 409, and ``queued_starts`` makes every start wait for room."""

    def __init__(
        self,
        running: list[str] | None = None,
        waiting: str | None = None,
        ended_before_cancel: bool = False,
        stops: bool = True,
        queued_starts: bool = False,
    ) -> None:
        self.running = list(running or [])
        self.waiting = waiting
        self.ended_before_cancel = ended_before_cancel
        self.stops = stops
        self.queued_starts = queued_starts
        self.cancelled: list[str] = []
        self.starts: list[dict[str, Any]] = []
        self.queued: list[str] = []
        self.fail: Exception | None = None
        self.backfills: list[NewBackfill | None] = []

    def active_run(self, pipeline: str) -> str | None:
        return self.running[0] if self.running else self.waiting

    def active_runs(self, pipeline: str) -> list[str]:
        return self.running + ([self.waiting] if self.waiting else [])

    def waiting_run(self, pipeline: str) -> str | None:
        return self.waiting

    def is_queued(self, run_id: str) -> bool:
        return run_id in self.queued

    async def start(
        self,
        name: str,
        trigger: str,
        schedule_id: str | None = None,
        *,
        priority: int = 0,
        busy: Busy = Busy.REFUSE,
        version: int | None = None,
        **cause: Any,
    ) -> str:
        if self.fail is not None:
            raise self.fail
        if busy is Busy.REFUSE and self.active_run(name):
            raise RunInProgress(f"pipeline {name!r} is already running", run_id=self.active_run(name))
        run_id = f"new{len(self.starts) + 1}"
        self.starts.append(
            {"name": name, "trigger": trigger, "schedule_id": schedule_id, "priority": priority,
             "busy": busy, "version": version, **cause}
        )  # fmt: skip
        if self.queued_starts or (busy is Busy.QUEUE_ONE and self.running):
            self.queued.append(run_id)
        return run_id

    async def queue_many(
        self,
        name: str,
        trigger: str,
        causes: Sequence[dict[str, Any]],
        priority: int = 0,
        version: int | None = None,
        backfill: NewBackfill | None = None,
    ) -> list[str]:
        ids = [f"queued{i}" for i in range(1, len(causes) + 1)]
        self.backfills.append(backfill)
        self.starts += [
            {"name": name, "trigger": trigger, "priority": priority, "version": version, **c} for c in causes
        ]
        self.queued += ids
        return ids

    async def cancel(self, run_id: str) -> None:
        if self.ended_before_cancel:
            raise Conflict(f"run {run_id} has ended", code="run_ended")
        self.cancelled.append(run_id)

    async def wait(self, run_id: str) -> None:
        if not self.stops:
            await asyncio.Event().wait()
        if run_id in self.running:
            self.running.remove(run_id)


def tick(overlap: str = "skip", **ask: Any) -> RunAsk:
    return RunAsk("p", CronTick("s1", TICK), overlap=overlap, **ask)  # type: ignore[arg-type]


async def test_nothing_running_fires_at_once() -> None:
    engine = Engine()
    assert await RunDoor(engine, "here").request_run(tick("replace")) == Fired("new1")
    assert engine.cancelled == []


async def test_skip_names_the_running_run() -> None:
    engine = Engine(["r1"])
    decision = await RunDoor(engine, "here").request_run(tick())
    assert decision == Skipped("previous run r1 still running (overlap 'skip')", "r1")
    assert engine.cancelled == [] and engine.starts == []


async def test_replace_cancels_and_waits_for_the_end() -> None:
    engine = Engine(["r1"])
    decision = await RunDoor(engine, "here").request_run(tick("replace"))
    assert decision == Fired("new1", "replaced run r1 (overlap 'replace')")
    assert engine.cancelled == ["r1"] and engine.running == []


async def test_replace_of_a_run_that_just_ended() -> None:
    engine = Engine(["r1"], ended_before_cancel=True)
    assert await RunDoor(engine, "here").request_run(tick("replace")) == Fired(
        "new1", "replaced run r1 (overlap 'replace')"
    )


async def test_replace_cancels_every_run_going() -> None:
    engine = Engine(["r1", "r2"])
    await RunDoor(engine, "here").request_run(tick("replace"))
    assert engine.cancelled == ["r1", "r2"]


async def test_a_run_that_does_not_stop_in_time_skips_a_tick_and_refuses_a_manual_run(monkeypatch: Any) -> None:
    monkeypatch.setattr(door_module, "REPLACE_TIMEOUT", 0.01)
    engine = Engine(["r1"], stops=False)
    why = "previous run r1 did not stop within 0 s (overlap 'replace')"
    assert await RunDoor(engine, "here").request_run(tick("replace")) == Skipped(why, "r1")
    manual = await RunDoor(engine, "here").request_run(RunAsk("p", Manual(), overlap="replace"))
    assert isinstance(manual, Refused) and isinstance(manual.error, RunInProgress)
    assert manual.error.message == why and manual.error.extra == {"run_id": "r1"}


async def test_allow_starts_beside_the_running_run() -> None:
    engine = Engine(["r1"])
    assert await RunDoor(engine, "here").request_run(tick("allow")) == Fired("new1")
    assert engine.cancelled == [] and engine.starts[0]["busy"] is Busy.ALLOW


async def test_queue_lets_one_run_wait_behind_the_running_one() -> None:
    engine = Engine(["r1"])
    decision = await RunDoor(engine, "here").request_run(tick("queue"))
    assert decision == Queued(("new1",), "queued behind run r1 (overlap 'queue')")
    assert engine.starts[0]["busy"] is Busy.QUEUE_ONE


async def test_queue_skips_a_second_waiting_run_naming_the_first() -> None:
    engine = Engine(["r1"], waiting="r2")
    decision = await RunDoor(engine, "here").request_run(tick("queue"))
    assert isinstance(decision, Skipped) and decision.in_the_way == "r2"
    assert "r2 already waits for run r1" in decision.reason and "at most one waiting run" in decision.reason


async def test_a_run_waiting_for_room_says_so() -> None:
    engine = Engine(queued_starts=True)
    decision = await RunDoor(engine, "here").request_run(tick())
    assert decision == Queued(("new1",), "queued: the instance has no room for it yet (GET /queue)")


def test_busy_for_each_policy() -> None:
    assert busy_for("queue") is Busy.QUEUE_ONE and busy_for("skip") is Busy.REFUSE
    assert busy_for("allow") is Busy.ALLOW and busy_for(None) is Busy.REFUSE


async def test_a_manual_run_of_a_busy_pipeline_is_admissions_409() -> None:
    engine = Engine(["r1"])
    decision = await RunDoor(engine, "here").request_run(RunAsk("p", Manual(), priority=5))
    assert isinstance(decision, Refused) and isinstance(decision.error, RunInProgress)
    assert "is already running" in decision.error.message


async def test_a_failed_start_is_refused_with_its_error() -> None:
    engine = Engine()
    engine.fail = DatabaseUnavailable("the database did not answer")
    decision = await RunDoor(engine, "here").request_run(tick())
    assert isinstance(decision, Refused) and decision.error is engine.fail


async def test_federation_ticks_are_skipped_for_a_run_here_then_elsewhere() -> None:
    asked: list[str] = []

    async def elsewhere() -> RunElsewhere | None:
        asked.append("etcd")
        return RunElsewhere("x-run", "x")

    ask = RunAsk("p", FederationTick("f1", TICK), elsewhere=elsewhere)
    here = await RunDoor(Engine(["r1"]), "me").request_run(ask)
    assert here == Skipped("previous run r1 still running on me", "r1") and asked == []
    there = await RunDoor(Engine(), "me").request_run(ask)
    assert there == Skipped("previous run x-run still running on x") and asked == ["etcd"]
    catch_up = RunAsk("p", CatchUp("f1", TICK, federation=True), elsewhere=elsewhere)
    assert await RunDoor(Engine(), "me").request_run(catch_up) == there
    # allow: neither here nor elsewhere is asked
    allowed = RunAsk("p", FederationTick("f1", TICK), overlap="allow", elsewhere=elsewhere)
    assert await RunDoor(Engine(["r1"]), "me").request_run(allowed) == Fired("new1")
    assert asked == ["etcd", "etcd"]


async def test_federation_scope_knows_only_skip_and_allow() -> None:
    engine = Engine(["r1"])
    trigger = DataTrigger("t1", "d", "c" * 40, federation=True)
    decision = await RunDoor(engine, "me").request_run(RunAsk("p", trigger, overlap="replace"))
    assert decision == Skipped("previous run r1 still running (overlap 'skip')", "r1")
    assert engine.cancelled == []


async def test_a_backfill_is_queued_in_tick_order_with_its_record() -> None:
    engine = Engine(["r1"])
    ticks = (TICK, TICK.replace(hour=13))
    backfill = Backfill("b1", "0 * * * *", "UTC", TICK, TICK.replace(hour=13), ticks, "alice")
    ask = RunAsk("p", backfill, priority=3, version=2)
    decision = await RunDoor(engine, "here").request_run(ask)
    assert decision == Queued(("queued1", "queued2"), door_module.BACKFILL_ORDER)
    assert [(s["trigger"], s["tick_at"], s["priority"], s["version"], s["backfill_id"]) for s in engine.starts] == [
        ("backfill", TICK, 3, 2, "b1"),
        ("backfill", TICK.replace(hour=13), 3, 2, "b1"),
    ]
    (record,) = engine.backfills
    assert record is not None and (record.id, record.pipeline, record.ticks, record.version) == ("b1", "p", 2, 2)
    assert (record.cron, record.start, record.end, record.created_by) == ("0 * * * *", TICK, ticks[-1], "alice")


@given(
    cause=st.one_of(
        st.builds(Manual),
        st.builds(CronTick, st.text(min_size=1), st.datetimes(timezones=st.just(UTC))),
        st.builds(FederationTick, st.text(min_size=1), st.datetimes(timezones=st.just(UTC))),
        st.builds(CatchUp, st.text(min_size=1), st.datetimes(timezones=st.just(UTC)), st.booleans()),
        st.builds(DataTrigger, st.text(min_size=1), st.text(min_size=1), st.text(), st.booleans()),
    ),
    priority=st.integers(-1000, 1000),
    overlap=st.sampled_from(["skip", "allow", "queue", "replace"]),
    version=st.none() | st.integers(1, 2**31 - 1),
)
def test_a_run_record_keeps_its_cause(cause: Any, priority: int, overlap: str, version: int | None) -> None:
    """Whatever the cause, an idle pipeline's run fires, recording the cause's trigger and fields."""
    engine = Engine()
    ask = RunAsk("p", cause, overlap, priority, version=version)  # type: ignore[arg-type]
    decision = asyncio.run(RunDoor(engine, "here").request_run(ask))
    assert decision == Fired("new1")
    (start,) = engine.starts
    assert start["trigger"] == cause.trigger and (start["priority"], start["version"]) == (priority, version)
    if isinstance(cause, DataTrigger):
        assert (start["schedule_id"], start["trigger_dataset"], start["trigger_commit"]) == (
            cause.trigger_id, cause.dataset, cause.commit,
        )  # fmt: skip
    elif not isinstance(cause, Manual):
        assert (start["schedule_id"], start["tick_at"]) == (cause.schedule_id, cause.tick_at)
    else:
        assert start["schedule_id"] is None and "tick_at" not in start
