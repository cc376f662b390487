"""A run's end decided in memory (``runs/recording.final_states``), for any mix of step states, stop
and crash: every step ends final, a step that had ended keeps its status, and the run's status and
error follow the one rule (a stop's, else the crash's, else failed when a step did not succeed, else
succeeded)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.states import DONE_STEP, ENDED_STEP, RunStatus, StepStatus
from orchestrator.runs.active import CANCELLED, SHUTDOWN, ActiveRun, Stop, timed_out
from orchestrator.runs.recording import final_states

PIPELINE = Pipeline.model_validate({"name": "p", "steps": [{"name": "a", "tool": "t", "output_dataset": "d"}]})

step_states = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4), st.sampled_from(list(StepStatus)), min_size=1, max_size=8
)
stops = st.sampled_from([None, CANCELLED, SHUTDOWN, timed_out(5.0)])
crashes = st.none() | st.text(min_size=1, max_size=20)


@given(step_states, stops, crashes, st.none() | st.text(min_size=1, max_size=20))
def test_every_step_ends_final_and_the_run_follows_the_rule(
    steps: dict[str, StepStatus], stop: Stop | None, crash: str | None, first_error: str | None
) -> None:
    run = ActiveRun("r", PIPELINE, PIPELINE.graph(), RunStatus.RUNNING, dict(steps))
    run.stop, run.first_error = stop, first_error

    final, error = final_states(run, crash)

    assert all(status in ENDED_STEP for status in run.steps.values())
    for name, before in steps.items():
        if before in ENDED_STEP:
            assert run.steps[name] is before  # an ended step keeps what it was
        elif stop is not None:
            assert run.steps[name] is (stop.pending if before is StepStatus.PENDING else stop.step)
    assert run.status is final
    if stop is not None:
        assert (final, error) == (stop.run, stop.reason)
    elif crash is not None:
        assert (final, error) == (RunStatus.FAILED, crash)
    elif all(status in DONE_STEP for status in steps.values()):
        assert (final, error) == (RunStatus.SUCCEEDED, None)
    else:
        assert final is RunStatus.FAILED and error
