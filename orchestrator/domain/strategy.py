"""The strategy watcher's rules: which tool a step's run starts with, and how each tool's outcome in a
run moves the step's state. Pure: no clock, no I/O (the caller passes ``now``; runs/strategies.py keeps
the state in SQL and logs each switch).

A step's tools form a chain, its main first, then its replacements in order (``Step.tools``). Each
tool is *healthy* until it failed (or degraded, ``degraded_when``) in ``open_after`` consecutive runs
of the step; then it is *abandoned* (``opened_at``) until a run that tries it succeeds. The *active*
tool is the first healthy one in the chain (the main when none is): a run starts with it, and when it
fails the run goes on with the tools after it, once each, as ``fallback_tool`` always did. Every
``probe_every`` seconds one run starts with an abandoned tool ahead of the active one instead (a
*probe*; the earliest in the chain first); if it fails, the run goes on with the active tool. An
operator may force a tool: runs start with it (then the tools after it) until the watcher is reset,
and no probe is made meanwhile; outcomes are still counted.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .pipeline import Degraded


class Verdict(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEGRADED = "degraded"  # succeeded, but slower or poorer than degraded_when allows


@dataclass(frozen=True)
class Rule:
    """The step's watcher settings (``Strategy``), as the machine needs them."""

    open_after: int
    probe_every: float


@dataclass(frozen=True)
class ToolHealth:
    tool: str
    failures: int = 0  # consecutive runs in which it failed or degraded
    opened_at: datetime | None = None  # since when runs no longer start with it (None: healthy)
    probed_at: datetime | None = None  # the last run that tried it while abandoned

    @property
    def healthy(self) -> bool:
        return self.opened_at is None

    def probe_due(self, rule: Rule, now: datetime) -> bool:
        last = self.probed_at or self.opened_at
        return last is not None and now - last >= timedelta(seconds=rule.probe_every)


@dataclass(frozen=True)
class StrategyState:
    tools: tuple[ToolHealth, ...]
    active: str
    since: datetime
    reason: str
    forced: str | None = None

    def health(self, tool: str) -> ToolHealth:
        return next(h for h in self.tools if h.tool == tool)

    @property
    def chain(self) -> tuple[str, ...]:
        return tuple(h.tool for h in self.tools)


@dataclass(frozen=True)
class Plan:
    """The tools one run tries, in order; ``probe``: the abandoned tool it tries first, if any."""

    order: tuple[str, ...]
    probe: str | None = None


@dataclass(frozen=True)
class Switch:
    """The active tool changed: what the instance's log and the state record say."""

    before: str
    after: str
    reason: str
    at: datetime

    def sentence(self) -> str:
        return f"active tool {self.before} -> {self.after}: {self.reason}"


def initial(chain: Sequence[str], now: datetime) -> StrategyState:
    return StrategyState(tuple(ToolHealth(t) for t in chain), chain[0], now, "main tool")


def fit(state: StrategyState | None, chain: Sequence[str], now: datetime) -> StrategyState:
    """The state for this chain: a new one when there is none, else the kept health of the tools still
    in it (a definition changed); a forced or active tool no longer in the chain is let go."""
    if state is None:
        return initial(chain, now)
    if state.chain == tuple(chain):
        return state
    kept = {h.tool: h for h in state.tools}
    tools = tuple(kept.get(t, ToolHealth(t)) for t in chain)
    forced = state.forced if state.forced in chain else None
    fitted = StrategyState(tools, state.active, state.since, state.reason, forced)
    active = _active(fitted)
    if active == state.active:
        return fitted
    return replace(fitted, active=active, since=now, reason="the step's tools changed")


def plan(state: StrategyState, rule: Rule, now: datetime) -> tuple[StrategyState, Plan]:
    """The tools the next run tries, and the state with its probe noted (so that runs starting
    together do not all probe)."""
    chain = state.chain
    if state.forced is not None:
        return state, Plan(chain[chain.index(state.forced) :])
    start = chain.index(state.active)
    after = chain[start:]
    for health in state.tools[:start]:
        if not health.healthy and health.probe_due(rule, now):
            probed = _with(state, replace(health, probed_at=now))
            return probed, Plan((health.tool, *after), probe=health.tool)
    return state, Plan(after)


def record(
    state: StrategyState, rule: Rule, tool: str, verdict: Verdict, now: datetime, detail: str = ""
) -> tuple[StrategyState, Switch | None]:
    """Count one run's outcome of ``tool``; the new state, and the switch it made if any."""
    health = state.health(tool)
    if verdict is Verdict.SUCCEEDED:
        health = ToolHealth(tool)
    else:
        failures = health.failures + 1
        if not health.healthy:
            health = replace(health, failures=failures, probed_at=now)
        elif failures >= rule.open_after:
            health = ToolHealth(tool, failures, opened_at=now)
        else:
            health = replace(health, failures=failures)
    updated = _with(state, health)
    active = _active(updated)
    if active == state.active:
        return updated, None
    why = _why(updated, tool, verdict, health, detail)
    switch = Switch(state.active, active, why, now)
    return replace(updated, active=active, since=now, reason=why), switch


def force(
    state: StrategyState, tool: str | None, now: datetime, reason: str
) -> tuple[StrategyState, Switch | None]:
    """Force ``tool`` (None: reset: every tool healthy again, the main active)."""
    if tool is None:
        fresh = replace(initial(state.chain, now), reason=reason)
        changed = state.active != fresh.active
        return fresh, Switch(state.active, fresh.active, reason, now) if changed else None
    forced = replace(
        state, forced=tool, active=tool, since=now if tool != state.active else state.since, reason=reason
    )
    return forced, Switch(state.active, tool, reason, now) if tool != state.active else None


def _active(state: StrategyState) -> str:
    if state.forced is not None:
        return state.forced
    return next((h.tool for h in state.tools if h.healthy), state.tools[0].tool)


def _with(state: StrategyState, health: ToolHealth) -> StrategyState:
    return replace(state, tools=tuple(health if h.tool == health.tool else h for h in state.tools))


def _why(state: StrategyState, tool: str, verdict: Verdict, health: ToolHealth, detail: str) -> str:
    what = f" ({detail})" if detail else ""
    if verdict is Verdict.SUCCEEDED:
        return f"{tool} succeeded again{what}"
    if not any(h.healthy for h in state.tools):
        return f"every tool is failing; {tool} {verdict} in {health.failures} consecutive runs{what}"
    return f"{tool} {verdict} in {health.failures} consecutive runs{what}"


def judge(degraded_when: Degraded | None, seconds: float, insights: object) -> tuple[Verdict, str]:
    """A successful run of a tool, as the watcher counts it: ``degraded`` when it took longer than
    ``duration_over`` or its ``insights.json`` (``insights``, parsed) number is below ``below``
    (absent or not a number counts as below: a tool that cannot show its quality is not shown
    healthy)."""
    if degraded_when is None:
        return Verdict.SUCCEEDED, ""
    if degraded_when.duration_over is not None:
        if seconds > degraded_when.duration_over:
            return Verdict.DEGRADED, f"took {seconds:.1f} s, over {degraded_when.duration_over:g} s"
        return Verdict.SUCCEEDED, ""
    key, below = degraded_when.insight, degraded_when.below
    assert key is not None and below is not None  # Degraded's validator: one rule or the other
    value = _insight(insights, key)
    if value is None:
        return Verdict.DEGRADED, f"insight {key} missing or not a number"
    if value < below:
        return Verdict.DEGRADED, f"insight {key} = {value:g}, below {below:g}"
    return Verdict.SUCCEEDED, ""


def _insight(insights: object, key: str) -> float | None:
    value = insights.get(key) if isinstance(insights, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
