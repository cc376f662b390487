"""A manual run's registrations are compared with the pins once: the API's check (its 409) stands
for the run's own when the run starts at once; a run that waits (queued, after a ``replace``), runs
another version, or was not checked by the API compares them itself when it starts. Each step still
reads its registrations through the pins when it uses them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.causes import CronTick, Manual, RunAsk
from orchestrator.domain.pipeline import Pipeline
from orchestrator.runs.admission import Busy
from orchestrator.runs.door import checked
from tests.unit.test_run_record_guard import attempt_that, runner_for


class Counting:
    """The test's Pins, counting the run-level comparisons and the steps' reads."""

    def __init__(self, pins: Any) -> None:
        self.pins = pins
        self.compared = 0
        self.read = 0

    async def changes(self, pipeline: Pipeline) -> list[Any]:
        self.compared += 1
        return []

    async def dataset(self, scope: str, name: str) -> Any:
        self.read += 1
        return await self.pins.dataset(scope, name)

    async def tool(self, scope: str, name: str) -> Any:
        self.read += 1
        return await self.pins.tool(scope, name)


@pytest.mark.parametrize("checked_by_api", [True, False])
def test_a_run_the_api_checked_does_not_compare_again(tmp_path: Path, checked_by_api: bool) -> None:
    async def scenario() -> tuple[int, int, str]:
        async with runner_for(tmp_path) as (runner, store):
            counting = Counting(runner.pins)
            runner.pins = runner.steps.pins = counting  # type: ignore[assignment]
            runner.attempts.run = attempt_that(None, None)  # type: ignore[method-assign]
            run_id = await runner.start("p", "manual", registrations_checked=checked_by_api)
            await runner.wait(run_id)
            record = await store.get_run(run_id)
            assert record is not None
            return counting.compared, counting.read, record.status

    compared, read, status = asyncio.run(scenario())
    assert status == "succeeded"
    assert compared == (0 if checked_by_api else 1)
    assert read == 3 * 2  # each of the three steps: its output dataset and its tool, when it runs


def test_a_queued_run_compares_when_its_turn_comes(tmp_path: Path) -> None:
    async def scenario() -> int:
        async with runner_for(tmp_path) as (runner, _):
            counting = Counting(runner.pins)
            runner.pins = runner.steps.pins = counting  # type: ignore[assignment]
            runner.attempts.run = attempt_that(None, None)  # type: ignore[method-assign]
            first = await runner.start("p", "manual", registrations_checked=True)
            second = await runner.start("p", "manual", busy=Busy.QUEUE_ONE, registrations_checked=True)
            assert runner.is_queued(second)
            await runner.wait(first)
            await runner.wait(second)
            return counting.compared

    assert asyncio.run(scenario()) == 1  # the queued one, at its start


@pytest.mark.parametrize(
    ("cause", "overlap", "version", "expected"),
    [
        (Manual(True), "skip", None, True),
        (Manual(True), "queue", None, True),  # queued after all: Runner.start only trusts it for a run starting now
        (Manual(True), "allow", None, True),
        (Manual(True), "replace", None, False),  # waits for the replaced run to stop
        (Manual(True), "skip", 3, False),  # another version may use other registrations
        (Manual(False), "skip", None, False),  # the API could not check (etcd away)
        (Manual(), "skip", None, False),
        (CronTick("s", None), "skip", None, False),  # type: ignore[arg-type]
    ],
)
def test_only_a_fresh_api_check_stands_for_the_runs(cause: Any, overlap: Any, version: Any, expected: bool) -> None:
    assert checked(RunAsk("p", cause, overlap, version=version), overlap) is expected
