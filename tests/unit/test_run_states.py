"""The run engine's pure parts: the state tables, the step graph, the backoff helper, the memo key."""

from __future__ import annotations

import pytest

from orchestrator.domain.graph import GraphError, downstream, find_cycle, resolve
from orchestrator.domain.pipeline import Step
from orchestrator.domain.states import (
    ATTEMPT_TRANSITIONS,
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    TICK_TRANSITIONS,
    AttemptStatus,
    IllegalTransition,
    RunStatus,
    StepStatus,
    TickOutcome,
    check,
)
from orchestrator.retry import CAP, backoff, bound
from orchestrator.runs.cache import memo_key


def test_every_status_has_a_row() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert set(STEP_TRANSITIONS) == set(StepStatus)
    assert set(ATTEMPT_TRANSITIONS) == set(AttemptStatus)
    assert set(TICK_TRANSITIONS) == set(TickOutcome)


@pytest.mark.parametrize(
    ("table", "old", "new"),
    [
        (RUN_TRANSITIONS, RunStatus.PENDING, RunStatus.RUNNING),
        (RUN_TRANSITIONS, RunStatus.RUNNING, RunStatus.CANCELLED),
        (RUN_TRANSITIONS, RunStatus.SUCCEEDED, RunStatus.FAILED),  # a queued merge conflicted later
        (STEP_TRANSITIONS, StepStatus.PENDING, StepStatus.SKIPPED),
        (STEP_TRANSITIONS, StepStatus.PENDING, StepStatus.CACHED),
        (STEP_TRANSITIONS, StepStatus.PENDING, StepStatus.REUSED),
        (STEP_TRANSITIONS, StepStatus.RUNNING, StepStatus.CONFLICT),
        (STEP_TRANSITIONS, StepStatus.SUCCEEDED, StepStatus.CONFLICT),
        (ATTEMPT_TRANSITIONS, AttemptStatus.RUNNING, AttemptStatus.STALLED),
        (TICK_TRANSITIONS, TickOutcome.CLAIMED, TickOutcome.FIRED),  # a federation-wide tick's run
        (TICK_TRANSITIONS, TickOutcome.CLAIMED, TickOutcome.SKIPPED),
    ],
)
def test_allowed_transitions(table, old, new) -> None:
    assert check(table, old, new) is new


@pytest.mark.parametrize(
    ("table", "old", "new"),
    [
        (RUN_TRANSITIONS, RunStatus.FAILED, RunStatus.RUNNING),
        (RUN_TRANSITIONS, RunStatus.CANCELLED, RunStatus.SUCCEEDED),
        (RUN_TRANSITIONS, RunStatus.PENDING, RunStatus.SUCCEEDED),
        (STEP_TRANSITIONS, StepStatus.SKIPPED, StepStatus.RUNNING),
        (STEP_TRANSITIONS, StepStatus.PENDING, StepStatus.SUCCEEDED),
        (STEP_TRANSITIONS, StepStatus.CACHED, StepStatus.FAILED),
        (ATTEMPT_TRANSITIONS, AttemptStatus.SUCCEEDED, AttemptStatus.FAILED),
        (TICK_TRANSITIONS, TickOutcome.FIRED, TickOutcome.SKIPPED),
        (TICK_TRANSITIONS, TickOutcome.MISSED, TickOutcome.FIRED),
        (TICK_TRANSITIONS, TickOutcome.SKIPPED, TickOutcome.CLAIMED),
    ],
)
def test_illegal_transitions_raise(table, old, new) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        check(table, old, new)


def test_ended_states_are_final() -> None:
    for status in (RunStatus.FAILED, RunStatus.CANCELLED):
        assert RUN_TRANSITIONS[status] == frozenset()
    for step_status in (
        StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED, StepStatus.CACHED, StepStatus.REUSED
    ):
        assert STEP_TRANSITIONS[step_status] == frozenset()


def test_absent_needs_make_a_straight_line_and_empty_needs_a_root() -> None:
    nodes = resolve(["a", "b", "c", "d"], [None, None, [], ["b", "c", "b"]])
    assert [(n.name, n.needs) for n in nodes] == [
        ("a", ()),
        ("b", ("a",)),
        ("c", ()),
        ("d", ("b", "c")),  # duplicates in needs collapse
    ]
    assert downstream(nodes, "a") == ["b", "d"]


@pytest.mark.parametrize(
    ("names", "needs", "steps", "words"),
    [
        (["a", "a"], [None, None], ["a"], "unique"),
        (["a", "b"], [[], ["x"]], ["b"], "b needs 'x'"),
        (["a"], [["a"]], ["a"], "themselves"),
        (["a", "b", "c"], [["c"], ["a"], ["b"]], ["a", "c", "b"], "cycle: a -> c -> b -> a"),
    ],
)
def test_bad_graphs_name_their_steps(names, needs, steps, words) -> None:
    with pytest.raises(GraphError) as caught:
        resolve(names, needs)
    assert caught.value.steps == steps and words in caught.value.message


def test_find_cycle_is_empty_for_a_dag() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) == []


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    assert [bound(n, 5) for n in (1, 2, 3)] == [5, 10, 20]
    assert bound(40, 5) == CAP and bound(10**6, 5) == CAP
    assert backoff(3, 5, draw=lambda: 0.5) == 10
    assert backoff(3, 5, draw=lambda: 0.0) == 0
    with pytest.raises(ValueError):
        bound(0, 5)


def test_the_memo_key_follows_what_the_output_depends_on() -> None:
    step = Step.model_validate(
        {"name": "s", "tool": "t", "output_dataset": "d", "cmd": ["a"], "private_env": {"K": "secret"}}
    )
    key = memo_key(step, "t", "sha256:1", "c1")
    assert len(key) == 64 and "secret" not in key
    assert memo_key(step.model_copy(update={"retries": 3, "cache": True}), "t", "sha256:1", "c1") == key
    # Resource limits change how the tool is bounded, not what it computes.
    assert memo_key(step.model_copy(update={"memory": 2**30, "cpus": 2.0}), "t", "sha256:1", "c1") == key
    for changed in (
        memo_key(step, "t", "sha256:2", "c1"),
        memo_key(step, "t", "sha256:1", "c2"),
        memo_key(step.model_copy(update={"cmd": ["b"]}), "t", "sha256:1", "c1"),
        memo_key(step.model_copy(update={"private_env": {"K": "other"}}), "t", "sha256:1", "c1"),
    ):
        assert changed != key


def test_step_fields() -> None:
    base = {"name": "s", "tool": "t", "output_dataset": "d"}
    assert Step.model_validate({**base, "cmd": []}).cmd is None
    with pytest.raises(ValueError, match="retires"):
        Step.model_validate({**base, "retires": 3})
    with pytest.raises(ValueError):
        Step.model_validate({**base, "retries": 21})
    assert Step.model_validate({**base, "retries": 20, "needs": []}).needs == []


def test_which_failures_are_retried() -> None:
    from pathlib import Path

    from orchestrator.errors import BadRequest, ExecutorUnavailable, GitError, NotFound
    from orchestrator.executors.seam import (
        BackendRejected,
        BackendUnavailable,
        ContainerSpec,
        End,
        EndKind,
        Identity,
        OutputData,
    )
    from orchestrator.runs.attempt import StepFailed, check_end, classify

    assert classify(ExecutorUnavailable("away")).passable
    assert classify(BackendUnavailable("away")).passable
    assert classify(GitError("the master did not answer")).passable
    assert not classify(NotFound("no such dataset")).passable
    assert not classify(BackendRejected("local", "step", "unknown image")).passable
    assert not classify(BadRequest("bad")).passable
    step = Step.model_validate({"name": "s", "tool": "t", "output_dataset": "d", "stall_timeout": 5})
    spec = ContainerSpec(
        identity=Identity(instance="i", pipeline="p", run="r", step="s", position=0, attempt=1),
        image="busybox",
        output=OutputData(folder=Path("/tmp")),
        user=(1000, 1000),
        timeout=60,
        stall_timeout=5,
    )
    check_end(step, End(kind=EndKind.COMPLETED, exit_code=0), spec)  # success: no exception
    statuses = {}
    for kind in EndKind:
        if kind is EndKind.COMPLETED:
            continue
        with pytest.raises(StepFailed) as caught:
            check_end(step, End(kind=kind, exit_code=2 if kind is EndKind.FAILED else None), spec)
        statuses[kind] = (caught.value.attempt_status, caught.value.passable)
    # Every end is its attempt's status; every one but a cancel is retried (the engine's ends too).
    assert statuses == {
        kind: (AttemptStatus(str(kind)), kind is not EndKind.CANCELLED) for kind in EndKind if kind is not EndKind.COMPLETED
    }
