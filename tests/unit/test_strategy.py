"""The strategy watcher's rules (orchestrator/domain/strategy.py) over generated sequences of plans,
outcomes, forces and resets, with an explicit clock; and the degraded_when verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.domain.pipeline import Degraded
from orchestrator.domain.strategy import (
    Rule,
    StrategyState,
    Verdict,
    fit,
    force,
    initial,
    judge,
    plan,
    record,
)
from orchestrator.request_models import PipelineRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHAIN = ("main", "r1", "r2")

events = st.lists(
    st.one_of(
        st.tuples(st.just("plan"), st.floats(0, 20)),
        st.tuples(st.just("outcome"), st.integers(0, 2), st.sampled_from(list(Verdict)), st.floats(0, 20)),
        st.tuples(st.just("force"), st.integers(0, 2)),
        st.tuples(st.just("reset")),
    ),
    max_size=60,
)
rules = st.builds(Rule, open_after=st.integers(1, 4), probe_every=st.sampled_from([1.0, 5.0, 30.0]))


def check(state: StrategyState) -> None:
    assert state.chain == CHAIN and state.active in CHAIN
    if state.forced is not None:
        assert state.active == state.forced
    else:
        assert state.active == next((h.tool for h in state.tools if h.healthy), "main")


@settings(max_examples=300, deadline=None)
@given(rule=rules, sequence=events)
def test_the_state_stays_consistent_and_plans_follow_it(rule: Rule, sequence: list[tuple]) -> None:
    state, now = initial(CHAIN, T0), T0
    streak = {t: 0 for t in CHAIN}  # consecutive non-successes since the last success or reset
    for event in sequence:
        if event[0] == "plan":
            now += timedelta(seconds=event[1])
            before = state
            state, the_plan = plan(state, rule, now)
            start = the_plan.order[0]
            rest = the_plan.order[1:] if the_plan.probe else the_plan.order
            # What follows the first tool (or a probe) is the chain from the active tool on.
            assert rest == CHAIN[CHAIN.index(before.active) :]
            if the_plan.probe is not None:
                probed = before.health(start)
                assert before.forced is None and not probed.healthy and probed.probe_due(rule, now)
                assert CHAIN.index(start) < CHAIN.index(before.active)
                # The same instant again never probes the same tool twice.
                assert plan(state, rule, now)[1].probe != start
            else:
                assert start == before.active
        elif event[0] == "outcome":
            now += timedelta(seconds=event[3])
            tool, verdict = CHAIN[event[1]], event[2]
            state, switch = record(state, rule, tool, verdict, now)
            streak[tool] = 0 if verdict is Verdict.SUCCEEDED else streak[tool] + 1
            if switch is not None:
                assert switch.after == state.active and switch.before != switch.after
                assert state.since == now
            health = state.health(tool)
            assert health.failures == streak[tool]
            if verdict is Verdict.SUCCEEDED:
                assert health.healthy
            elif streak[tool] >= rule.open_after:
                assert not health.healthy
        elif event[0] == "force":
            state, _ = force(state, CHAIN[event[1]], now, "forced")
            assert state.active == CHAIN[event[1]]
        else:
            state, _ = force(state, None, now, "reset")
            assert state.active == "main" and all(h.healthy for h in state.tools)
            streak = {t: 0 for t in CHAIN}
        check(state)


@settings(max_examples=100, deadline=None)
@given(rule=rules, gaps=st.lists(st.floats(0, 100), max_size=30))
def test_a_main_that_never_fails_stays_active(rule: Rule, gaps: list[float]) -> None:
    state, now = initial(CHAIN, T0), T0
    for gap in gaps:
        now += timedelta(seconds=gap)
        state, the_plan = plan(state, rule, now)
        assert the_plan == type(the_plan)(CHAIN)
        state, switch = record(state, rule, "main", Verdict.SUCCEEDED, now)
        assert switch is None and state.active == "main"


@settings(max_examples=100, deadline=None)
@given(open_after=st.integers(1, 5), probe_every=st.floats(0.5, 600))
def test_open_then_probe_then_return(open_after: int, probe_every: float) -> None:
    rule, now = Rule(open_after, probe_every), T0
    state = initial(CHAIN, now)
    for n in range(open_after):
        state, the_plan = plan(state, rule, now)
        assert the_plan.order[0] == "main"
        state, switch = record(state, rule, "main", Verdict.FAILED, now)
        state, _ = record(state, rule, "r1", Verdict.SUCCEEDED, now)
        assert (switch is not None) == (n == open_after - 1)
    assert state.active == "r1" and "main failed in" in state.reason
    # Before probe_every has passed, runs start with r1 and never pay for main.
    almost = now + timedelta(seconds=probe_every * 0.99)
    state, the_plan = plan(state, rule, almost)
    assert the_plan.order == ("r1", "r2") and the_plan.probe is None
    # Then one run probes main; it fails: the probe clock starts again, r1 stays.
    later = now + timedelta(seconds=probe_every)
    state, the_plan = plan(state, rule, later)
    assert the_plan.order == ("main", "r1", "r2") and the_plan.probe == "main"
    state, switch = record(state, rule, "main", Verdict.FAILED, later)
    assert switch is None and state.active == "r1"
    assert plan(state, rule, later + timedelta(seconds=probe_every * 0.99))[1].probe is None
    # The next probe succeeds: back to main.
    again = later + timedelta(seconds=probe_every)
    state, the_plan = plan(state, rule, again)
    assert the_plan.probe == "main"
    state, switch = record(state, rule, "main", Verdict.SUCCEEDED, again)
    assert switch is not None and (switch.before, switch.after) == ("r1", "main")
    assert state.active == "main" and state.since == again


def test_each_replacement_in_order_and_every_tool_failing() -> None:
    rule, now = Rule(1, 10), T0
    state = initial(CHAIN, now)
    state, _ = record(state, rule, "main", Verdict.FAILED, now)
    state, _ = record(state, rule, "r1", Verdict.DEGRADED, now, "took 9 s")
    assert state.active == "r2" and "r1 degraded" in state.reason and "took 9 s" in state.reason
    state, _ = record(state, rule, "r2", Verdict.FAILED, now)
    assert state.active == "main" and state.reason.startswith("every tool is failing")
    # r1 comes back before main: it is active until main does.
    later = now + timedelta(seconds=10)
    state, the_plan = plan(state, rule, later)
    assert the_plan.order == CHAIN  # every tool abandoned: the main first, no probe needed
    state, _ = record(state, rule, "r1", Verdict.SUCCEEDED, later)
    assert state.active == "r1"
    state, the_plan = plan(state, rule, later + timedelta(seconds=10))
    assert the_plan.probe == "main"


def test_force_holds_until_reset_and_a_changed_chain_keeps_what_it_can() -> None:
    rule, now = Rule(1, 1), T0
    state, switch = force(initial(CHAIN, now), "r2", now, "forced by an operator")
    assert switch is not None and state.active == "r2"
    state, _ = record(state, rule, "r2", Verdict.FAILED, now)
    state, the_plan = plan(state, rule, now + timedelta(hours=1))
    assert state.active == "r2" and the_plan.order == ("r2",)
    state, switch = force(state, None, now, "reset by an operator")
    assert state.active == "main" and state.forced is None and switch is not None
    state, _ = record(state, rule, "main", Verdict.FAILED, now)
    fitted = fit(state, ("main", "r2"), now)
    assert fitted.chain == ("main", "r2") and fitted.active == "r2" and not fitted.health("main").healthy
    assert fit(None, ("a", "b"), now).active == "a"


@pytest.mark.parametrize(
    ("rule", "seconds", "insights", "verdict"),
    [
        (None, 99.0, None, Verdict.SUCCEEDED),
        (Degraded(duration_over=10), 10.0, None, Verdict.SUCCEEDED),
        (Degraded(duration_over=10), 10.5, None, Verdict.DEGRADED),
        (Degraded(insight="f1", below=0.8), 1, {"f1": 0.9}, Verdict.SUCCEEDED),
        (Degraded(insight="f1", below=0.8), 1, {"f1": 0.5}, Verdict.DEGRADED),
        (Degraded(insight="f1", below=0.8), 1, {"f1": "high"}, Verdict.DEGRADED),
        (Degraded(insight="f1", below=0.8), 1, {"f1": True}, Verdict.DEGRADED),
        (Degraded(insight="f1", below=0.8), 1, ["f1", 0.9], Verdict.DEGRADED),
        (Degraded(insight="f1", below=0.8), 1, None, Verdict.DEGRADED),
    ],
)
def test_degraded_when(rule: Degraded | None, seconds: float, insights: object, verdict: Verdict) -> None:
    assert judge(rule, seconds, insights)[0] is verdict


def step(**extra: object) -> dict[str, object]:
    return {"name": "s", "output_dataset": "o", **extra}


@pytest.mark.parametrize(
    "bad",
    [
        step(strategy={"main": "a", "replacements": ["a"]}),
        step(strategy={"main": "a", "replacements": []}),
        step(strategy={"main": "a", "replacements": ["b"], "open_after": 0}),
        step(strategy={"main": "a", "replacements": ["b"], "probe_every": 0}),
        step(strategy={"main": "a", "replacements": ["b"], "probe_every": "5"}),
        step(strategy={"main": "a", "replacements": ["b"], "watch": True}),
        step(tool="x", strategy={"main": "a", "replacements": ["b"]}),
        step(tool="a", fallback_tool="b", strategy={"main": "a", "replacements": ["c"]}),
        step(tool="a", degraded_when={"duration_over": 5}),
        step(strategy={"main": "a", "replacements": ["b"]}, degraded_when={"insight": "f1"}),
        step(
            strategy={"main": "a", "replacements": ["b"]},
            degraded_when={"duration_over": 5, "insight": "f", "below": 1},
        ),
        step(strategy={"main": "a", "replacements": ["b"]}, degraded_when={}),
        step(strategy={"main": "a", "replacements": ["b"]}, degraded_when={"duration_over": 5, "x": 1}),
    ],
)
def test_bad_strategies_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PipelineRequest.model_validate({"name": "p", "steps": [bad]})


def test_a_strategy_names_the_tool_and_the_shorthand_stays() -> None:
    good = PipelineRequest.model_validate(
        {"name": "p", "steps": [step(strategy={"main": "a", "replacements": ["b", "c"], "probe_every": 2})]}
    )
    assert good.steps[0].tool == "a" and good.steps[0].tools() == ["a", "b", "c"]
    short = PipelineRequest.model_validate({"name": "p", "steps": [step(tool="a", fallback_tool="b")]})
    assert short.steps[0].tools() == ["a", "b"] and "strategy" not in short.steps[0].public()


names = st.sampled_from(["a", "b", "c", "d"])
maybe_numbers = st.one_of(st.none(), st.integers(-2, 5), st.floats(-1, 10, allow_nan=False), st.text(max_size=2))


@settings(max_examples=200, deadline=None)
@given(
    main=names,
    replacements=st.lists(names, max_size=4),
    open_after=maybe_numbers,
    probe_every=maybe_numbers,
)
def test_any_strategy_is_refused_or_sound(
    main: str, replacements: list[str], open_after: object, probe_every: object
) -> None:
    strategy: dict[str, object] = {"main": main, "replacements": replacements}
    if open_after is not None:
        strategy["open_after"] = open_after
    if probe_every is not None:
        strategy["probe_every"] = probe_every
    try:
        parsed = PipelineRequest.model_validate({"name": "p", "steps": [step(strategy=strategy)]})
    except ValidationError:
        return
    only = parsed.steps[0]
    assert only.strategy is not None and only.tool == main
    assert only.tools() == [main, *replacements] and len(set(only.tools())) == len(only.tools()) >= 2
    assert only.strategy.open_after >= 1 and only.strategy.probe_every > 0


moments = st.one_of(st.none(), st.integers(0, 10**6).map(lambda s: T0 + timedelta(seconds=s)))


@settings(max_examples=100, deadline=None)
@given(
    health=st.lists(st.tuples(st.integers(0, 9), moments, moments), min_size=3, max_size=3),
    active=st.sampled_from(CHAIN),
    forced=st.one_of(st.none(), st.sampled_from(CHAIN)),
)
def test_the_state_survives_its_row(health: list[tuple], active: str, forced: str | None) -> None:
    from orchestrator.domain.strategy import ToolHealth
    from orchestrator.store.strategies import _health_json, _state
    from orchestrator.store.tables import StrategyStateRow

    tools = tuple(ToolHealth(t, f, o, p) for t, (f, o, p) in zip(CHAIN, health, strict=True))
    state = StrategyState(tools, active, T0, "why", forced)
    row = StrategyStateRow(pipeline="p", step="s", active=active, since=T0, reason="why", forced=forced,
                           tools=[_health_json(h) for h in tools])  # fmt: skip
    assert _state(row) == state
