"""A run's end is tried again only while trying again can help (``Recorder.close``): an outage (the
database away, a full disk) or an unexpected error is tried again; a transition the tables refuse
(``IllegalTransition``: a bug, refused the same way on every try) is given up at once, for the next
start's reconcile. Generated: any sequence of failures before the write goes through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.states import IllegalTransition, RunStatus, StepStatus
from orchestrator.errors import DatabaseUnavailable
from orchestrator.runs import recording
from orchestrator.runs.active import ActiveRun
from orchestrator.runs.recording import Recorder

PIPELINE = Pipeline.model_validate(
    {"name": "p", "steps": [{"name": "a", "tool": "t", "output_dataset": "d"}]}
)

FAILURES: dict[str, type[Exception]] = {
    "outage": DatabaseUnavailable,
    "unexpected": ValueError,
    "illegal": IllegalTransition,
}


class Records:
    """A run record whose close fails as ``failures`` say, one per try, then succeeds."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        self.tries = 0

    async def close(self, *args: Any) -> None:
        self.tries += 1
        if self.failures:
            raise FAILURES[self.failures.pop(0)]("no")


async def no_sleep(_: float) -> None:
    return None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(FAILURES)), max_size=6))
def test_only_what_can_succeed_is_tried_again(failures: list[str]) -> None:
    records = Records(failures)
    recorder = Recorder(records)  # type: ignore[arg-type]
    run = ActiveRun("r", PIPELINE, PIPELINE.graph(), RunStatus.RUNNING, {"a": StepStatus.SUCCEEDED})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recording.asyncio, "sleep", no_sleep)
        asyncio.run(recorder.close(run, None))
    # Tried until the first refusal (then never again), or until the write went through.
    expected = failures.index("illegal") + 1 if "illegal" in failures else len(failures) + 1
    assert records.tries == expected, failures
