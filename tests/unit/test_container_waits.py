"""A wait for a submitted container whose engine wait has returned answers from the description
read then only when it shows the container ended for good: a container removed from outside
shows "running" or "removing" while the engine removes it, and a wait that kept that answer
would say "running" at once, for ever (the orchestrator asking again in a busy loop, its step
never lost and retried). Without an engine: the executor's monitor state is set up by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor.config import Settings
from executor.container_state import ENDED_STATES
from executor.container_watch import Watch
from executor.containers import Containers
from executor.wire.containers import EXECUTOR_LABEL, Phase
from executor.wire.errors import NotFound

SETTINGS = Settings(token="unit", instance="unit")
ENGINE_STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")


class _Service:

    def op(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(fn(*args))
        return future


class _Engine:
    """The engine now: the container is gone (removed from outside)."""

    def __init__(self) -> None:
        self.inspections = 0

    def inspect(self, name: str) -> dict[str, Any] | None:
        self.inspections += 1
        return None

    def node_name(self) -> str:
        return "node"

    def logs_tail(self, name: str, lines: int) -> str:
        return ""


def _described(status: str) -> dict[str, Any]:
    return {
        "Id": "0" * 64,
        "Config": {"Labels": {EXECUTOR_LABEL: SETTINGS.instance}},
        "State": {"Status": status, "ExitCode": 137, "StartedAt": "2026-12-06T21:00:00.000000001Z"},
        "Created": "2026-12-06T20:59:59Z",
    }


@given(status=st.sampled_from(ENGINE_STATES), tail=st.sampled_from([0, 200]))
def test_a_wait_answers_from_the_end_read_once_only_when_it_ended(status: str, tail: int) -> None:
    async def scenario() -> None:
        engine = _Engine()
        containers = Containers(SETTINGS, engine, _Service())  # type: ignore[arg-type]
        watch = Watch("c1")
        watch.exited.set()
        watch.final = asyncio.get_running_loop().create_future()
        watch.final.set_result(_described(status))
        containers._watches["c1"] = watch
        if status in ENDED_STATES:
            state = await containers.wait("c1", hold=0, tail=tail)
            assert state.phase is Phase.ENDED and engine.inspections == 0
        else:
            with pytest.raises(NotFound):
                await containers.wait("c1", hold=0, tail=tail)
            assert engine.inspections == 1  # asked again, and it is gone

    asyncio.run(scenario())
