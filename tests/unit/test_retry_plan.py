"""The retry plan (domain/retry.py): which steps a retry reuses and which it runs, over generated
graphs, past outcomes, changed definitions and moved ground-truths."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.graph import StepNode, resolve
from orchestrator.domain.retry import Action, PastStep, plan_retry, reused, stale_steps
from orchestrator.domain.states import DONE_STEP, RunStatus, StepStatus

ENDED = [s for s in StepStatus if s not in (StepStatus.PENDING, StepStatus.RUNNING)]


@st.composite
def retries(draw: st.DrawFn) -> tuple[list[StepNode], dict[str, PastStep], set[str], dict[str, str]]:
    """A graph (each step needs some earlier ones, or the one before when it declares none), the
    retried run's steps (some missing: a newer definition added them), changed and stale steps."""
    count = draw(st.integers(1, 12))
    names = [f"s{i}" for i in range(count)]
    declared = [
        None if draw(st.booleans()) else draw(st.lists(st.sampled_from(names[:i]), max_size=3)) if i else []
        for i in range(count)
    ]
    nodes = resolve(names, declared)
    past = {
        n: PastStep(n, draw(st.sampled_from(ENDED)), "d")
        for n in names
        if draw(st.integers(0, 9))  # one in ten: the retried run had no such step
    }
    changed = set(draw(st.lists(st.sampled_from(names), max_size=2)))
    stale = {n: f"moved {n}" for n in draw(st.lists(st.sampled_from(names), max_size=2))}
    return nodes, past, changed, stale


@given(retries())
def test_the_plan_reuses_exactly_the_done_steps_with_nothing_to_run_upstream(case) -> None:
    nodes, past, changed, stale = case
    plan = plan_retry("old", past, nodes, changed, stale)
    assert [p.step for p in plan] == [n.name for n in nodes]  # every step, in the graph's order
    action = {p.step: p.action for p in plan}
    needs = {n.name: n.needs for n in nodes}

    def own_cause(name: str) -> bool:
        step = past.get(name)
        return step is None or step.status not in DONE_STEP or name in changed or name in stale

    for name in needs:
        upstream_runs = any(action[need] is Action.RUN for need in needs[name])
        # Runs exactly when it has a cause of its own or a need that runs (the downstream closure).
        assert (action[name] is Action.RUN) == (own_cause(name) or upstream_runs), name
    # Closed downstream: a dependant of a step that runs runs too, however deep.
    running = {n for n, a in action.items() if a is Action.RUN}
    for name, its_needs in needs.items():
        if set(its_needs) & running:
            assert name in running
    # Every reason names the retried run or a step that runs again.
    for p in plan:
        assert "old" in p.reason or any(r in p.reason for r in running) or p.reason.startswith("moved")


@given(retries())
def test_a_retry_of_a_retry_that_reused_everything_reuses_everything(case) -> None:
    nodes, _, _, _ = case
    done = {n.name: PastStep(n.name, StepStatus.REUSED, "d") for n in nodes}
    assert reused(plan_retry("old", done, nodes)) == [n.name for n in nodes]


def test_reasons() -> None:
    nodes = resolve(["a", "b", "c", "d", "e"], [None, None, None, [], ["d"]])
    past = {
        "a": PastStep("a", StepStatus.SUCCEEDED, "x"),
        "b": PastStep("b", StepStatus.FAILED, "x"),
        "c": PastStep("c", StepStatus.SKIPPED, "x"),
        "d": PastStep("d", StepStatus.CACHED, "y"),
    }
    plan = {p.step: (p.action, p.reason) for p in plan_retry("r1", past, nodes)}
    assert plan == {
        "a": (Action.REUSE, "succeeded in run r1"),
        "b": (Action.RUN, "failed in run r1"),
        "c": (Action.RUN, "skipped in run r1"),
        "d": (Action.REUSE, "cached in run r1"),
        "e": (Action.RUN, "run r1 had no step e"),
    }
    changed = {p.step: p.reason for p in plan_retry("r1", past, nodes, changed={"a"})}
    assert changed["a"] == "its definition changed since run r1"
    assert changed["b"] == "failed in run r1"
    moved = {p.step: p.reason for p in plan_retry("r1", past, nodes, stale={"d": "it moved"})}
    assert (moved["d"], moved["e"]) == ("it moved", "run r1 had no step e")
    chain = resolve(["a", "b", "c"], [None, None, None])
    again = plan_retry("r1", {**past, "b": PastStep("b", StepStatus.SUCCEEDED, "x")}, chain, stale={"a": "m"})
    assert [(p.action, p.reason) for p in again] == [
        (Action.RUN, "m"),
        (Action.RUN, "downstream of a (run again)"),
        (Action.RUN, "skipped in run r1"),
    ]


def test_stale_steps_when_ground_truth_moved() -> None:
    past = {
        "a": PastStep("a", StepStatus.SUCCEEDED, "x", merge_commit="a" * 40),
        "b": PastStep("b", StepStatus.SUCCEEDED, "x", merge_commit="b" * 40),  # merged after a
        "c": PastStep("c", StepStatus.SUCCEEDED, "y", merge_commit="c" * 40),
        "d": PastStep("d", StepStatus.CACHED, "z", merge_commit=None),
        "e": PastStep("e", StepStatus.SUCCEEDED, "w", merge_commit="e" * 40),
        "f": PastStep("f", StepStatus.FAILED, "y", merge_commit="f" * 40),  # a failed step left nothing
    }
    tips = {"x": "b" * 40, "y": "f" * 40, "z": "0" * 40}
    found = stale_steps("r1", past, ["a", "b", "c", "d", "e"], tips, unreadable={"w": "remote away"})
    assert set(found) == {"c", "d", "e"}  # a and b: x is as the run left it (b merged last)
    assert found["c"] == f"ground-truth of y moved since run r1 (its tip is {'f' * 12}, the run left {'c' * 12})"
    assert found["d"] == f"ground-truth of z moved since run r1 (its tip is {'0' * 12}, the run left no merge)"
    assert found["e"] == "ground-truth of w could not be read (remote away)"


@given(st.lists(st.sampled_from("abc"), max_size=6), st.sampled_from("abcz"))
def test_a_tip_the_run_left_is_never_stale(merged_in: list[str], tip: str) -> None:
    past = {f"s{i}": PastStep(f"s{i}", StepStatus.SUCCEEDED, "x", merge_commit=c * 40) for i, c in enumerate(merged_in)}
    found = stale_steps("r", past, list(past), {"x": tip * 40})
    assert (found == {}) == (tip in merged_in or not past)


def test_changed_steps_by_version_or_by_the_records() -> None:
    import asyncio
    from dataclasses import replace
    from datetime import UTC, datetime
    from typing import Any

    from orchestrator.domain.pipeline import Pipeline
    from orchestrator.domain.versions import definition
    from orchestrator.runs.retry_start import changed_steps, past_steps
    from orchestrator.store.run_views import RunView, StepView
    from orchestrator.store.versions import VersionRecord

    def pipeline(cmd: str, tool: str = "t", env: dict[str, str] | None = None) -> Pipeline:
        return Pipeline.model_validate({"name": "p", "steps": [
            {"name": "one", "tool": "t", "output_dataset": "d", "cmd": ["sh", "-c", "echo 1"]},
            {"name": "two", "tool": tool, "output_dataset": "e", "cmd": ["sh", "-c", cmd], "env": env},
            {"name": "new", "tool": "t", "output_dataset": "f"},
        ][: 2 if cmd == "old" else 3]})  # fmt: skip

    class Versions:
        async def get(self, name: str, number: int) -> VersionRecord | None:
            old = pipeline("old")
            return VersionRecord(name, number, "h", definition(old), datetime.now(UTC), None)

    record = RunView(id="r1", pipeline="p", trigger="manual", status=RunStatus.FAILED, version=1, steps=(
        StepView(position=0, name="one", status=StepStatus.SUCCEEDED, tool="t", output_dataset="d", branch="b1",
                 merge_commit="m"),
        StepView(position=1, name="two", status=StepStatus.FAILED, tool="t", output_dataset="e", branch="b2"),
    ))  # fmt: skip
    versions: Any = Versions()
    # The same definition is no change; another cmd or env is.
    assert asyncio.run(changed_steps(versions, record, pipeline("old"))) == set()
    assert asyncio.run(changed_steps(versions, record, pipeline("new"))) == {"two"}
    assert asyncio.run(changed_steps(versions, record, pipeline("old", env={"A": "1"}))) == {"two"}
    # A run recorded without a version: only what its step records hold (tool and datasets).
    unversioned = replace(record, version=None)
    assert asyncio.run(changed_steps(versions, unversioned, pipeline("new"))) == set()
    assert asyncio.run(changed_steps(versions, unversioned, pipeline("new", tool="u"))) == {"two"}
    past = past_steps(record)
    assert past["one"] == PastStep("one", StepStatus.SUCCEEDED, "d", "m")
    assert past["two"].merge_commit is None
