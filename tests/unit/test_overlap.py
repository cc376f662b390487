"""Overlap policies against a stand-in runner: ``skip`` leaves the running run alone and says why;
``replace`` cancels it and waits for its end; a run that ended meanwhile is no obstacle; ``queue``
makes room for one waiting run, not two."""

from __future__ import annotations

import asyncio

from orchestrator.errors import Conflict
from orchestrator.runs.admission import Busy
from orchestrator.scheduling.overlap import busy_for, make_room, started_note


class Runner:
    def __init__(
        self, active: str | None, ended_before_cancel: bool = False, waiting: str | None = None
    ) -> None:
        self.active = active
        self.waiting = waiting
        self.ended_before_cancel = ended_before_cancel
        self.cancelled: list[str] = []
        self.done = asyncio.Event()

    def active_run(self, pipeline: str) -> str | None:
        return self.active

    def active_runs(self, pipeline: str) -> list[str]:
        return [self.active] if self.active else []

    def is_queued(self, run_id: str) -> bool:
        return False

    def waiting_run(self, pipeline: str) -> str | None:
        return self.waiting

    async def cancel(self, run_id: str) -> None:
        if self.ended_before_cancel:
            raise Conflict(f"run {run_id} has ended", code="run_ended")
        self.cancelled.append(run_id)
        asyncio.get_running_loop().call_later(0.05, self._end)

    def _end(self) -> None:
        self.active = None
        self.done.set()

    async def wait(self, run_id: str) -> None:
        if self.ended_before_cancel:
            return
        await self.done.wait()


async def test_nothing_running_leaves_room() -> None:
    assert await make_room(Runner(None), "p", "replace") == (None, None)  # type: ignore[arg-type]


async def test_skip_names_the_running_run() -> None:
    runner = Runner("r1")
    active, why = await make_room(runner, "p", "skip")  # type: ignore[arg-type]
    assert active == "r1" and why is not None and "r1 still running" in why and runner.cancelled == []


async def test_replace_cancels_and_waits_for_the_end() -> None:
    runner = Runner("r1")
    assert await make_room(runner, "p", "replace") == ("r1", None)  # type: ignore[arg-type]
    assert runner.cancelled == ["r1"] and runner.active is None


async def test_replace_of_a_run_that_just_ended() -> None:
    runner = Runner("r1", ended_before_cancel=True)
    assert await make_room(runner, "p", "replace") == ("r1", None)  # type: ignore[arg-type]


async def test_allow_leaves_the_running_run_alone_and_starts_beside_it() -> None:
    runner = Runner("r1")
    assert await make_room(runner, "p", "allow") == (None, None)  # type: ignore[arg-type]
    assert runner.cancelled == [] and runner.active == "r1"


class Several(Runner):
    """Runs allowed side by side earlier: ``replace`` stops each of them."""

    def __init__(self) -> None:
        super().__init__("r1")
        self.running = ["r1", "r2"]

    def active_runs(self, pipeline: str) -> list[str]:
        return list(self.running)

    async def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)
        self.running.remove(run_id)

    async def wait(self, run_id: str) -> None:
        return None


async def test_replace_cancels_every_run_going() -> None:
    runner = Several()
    assert await make_room(runner, "p", "replace") == ("r1", None)  # type: ignore[arg-type]
    assert runner.cancelled == ["r1", "r2"]


async def test_queue_lets_one_run_wait_behind_the_running_one() -> None:
    runner = Runner("r1")
    assert await make_room(runner, "p", "queue") == ("r1", None)  # type: ignore[arg-type]
    assert busy_for("queue") is Busy.QUEUE_ONE and busy_for("skip") is Busy.REFUSE
    assert busy_for("allow") is Busy.ALLOW and busy_for(None) is Busy.REFUSE
    assert runner.cancelled == []


async def test_queue_skips_a_second_waiting_run_naming_the_first() -> None:
    runner = Runner("r1", waiting="r2")
    active, why = await make_room(runner, "p", "queue")  # type: ignore[arg-type]
    assert active == "r2" and why is not None and "r2 already waits for run r1" in why
    assert "at most one waiting run" in why


def test_the_note_of_a_fired_tick() -> None:
    runner = Runner(None)
    assert started_note(runner, "r2", "r1", "queue") == "queued behind run r1 (overlap 'queue')"  # type: ignore[arg-type]
    assert started_note(runner, "r2", "r1", "replace") == "replaced run r1 (overlap 'replace')"  # type: ignore[arg-type]
    assert started_note(runner, "r2", None, "skip") is None  # type: ignore[arg-type]
