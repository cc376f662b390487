"""The strategy watcher of this instance: it asks the rules (``domain/strategy.py``) which tools a
step's run tries, counts each tool's outcome, keeps each step's state in SQL (``store/strategies.py``)
and logs each switch of the active tool in one sentence (the instance's log, logger
``orchestrator.runs.strategies``).

A step without a ``strategy`` (``fallback_tool`` alone, or nothing) has no watcher: its runs try its
tool, then its fallback tool, as they always did, and nothing is recorded. The watcher never fails a
run: when the database does not answer, the run tries the step's tools from the main on and the
outcome is not counted (a warning says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..domain.pipeline import Pipeline, Step
from ..domain.strategy import Plan, Rule, StrategyState, Switch, Verdict, fit, force, plan, record
from ..errors import BadRequest, MaoError, NotFound
from ..store import Store
from ..store.strategies import StrategyStore
from ..store.tables import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepStrategy:
    """A step's strategy state as ``GET /pipeline/{name}`` shows it."""

    active: str
    since: datetime
    reason: str
    forced: str | None
    tools: list[dict[str, object]]

    def public(self) -> dict[str, object]:
        return {
            "active": self.active,
            "since": self.since.isoformat(),
            "reason": self.reason,
            "forced": self.forced,
            "tools": self.tools,
        }


def rule_of(step: Step) -> Rule:
    assert step.strategy is not None
    return Rule(step.strategy.open_after, step.strategy.probe_every)


def view(state: StrategyState) -> StepStrategy:
    tools: list[dict[str, object]] = [
        {
            "tool": h.tool,
            "healthy": h.healthy,
            "consecutive_failures": h.failures,
            "abandoned_at": h.opened_at.isoformat() if h.opened_at else None,
            "probed_at": h.probed_at.isoformat() if h.probed_at else None,
        }
        for h in state.tools
    ]
    return StepStrategy(state.active, state.since, state.reason, state.forced, tools)


class Strategies:
    def __init__(self, store: Store, clock: Callable[[], datetime] = utcnow) -> None:
        self.states = StrategyStore(store)
        self.clock = clock
        # One change at a time per step: runs of one pipeline side by side (overlap allow) and an
        # operator's force read and write the same row.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _lock(self, pipeline: str, step: str) -> asyncio.Lock:
        return self._locks.setdefault((pipeline, step), asyncio.Lock())

    async def plan(self, pipeline: str, step: Step) -> Plan:
        """The tools this run of ``step`` tries, in order."""
        chain = step.tools()
        if step.strategy is None:
            return Plan(tuple(chain))
        try:
            async with self._lock(pipeline, step.name):
                stored = await self.states.get(pipeline, step.name)
                now = self.clock()
                state, the_plan = plan(fit(stored, chain, now), rule_of(step), now)
                if state != stored:
                    await self.states.put(pipeline, step.name, state)
        except MaoError as exc:
            log.warning("pipeline %s step %s: strategy state unavailable (%s); trying its tools from the main",
                        pipeline, step.name, exc.message)  # fmt: skip
            return Plan(tuple(chain))
        if the_plan.probe is not None:
            log.info("pipeline %s step %s: this run tries %s again (abandoned, probed every %g s)",
                     pipeline, step.name, the_plan.probe, rule_of(step).probe_every)  # fmt: skip
        return the_plan

    async def outcome(self, pipeline: str, step: Step, tool: str, verdict: Verdict, detail: str = "") -> None:
        """Count one run's outcome of ``tool`` for ``step``'s watcher."""
        if step.strategy is None or tool not in step.tools():
            return
        try:
            async with self._lock(pipeline, step.name):
                now = self.clock()
                state = fit(await self.states.get(pipeline, step.name), step.tools(), now)
                state, switch = record(state, rule_of(step), tool, verdict, now, detail)
                await self.states.put(pipeline, step.name, state)
        except MaoError as exc:
            log.warning("pipeline %s step %s: the outcome of %s (%s) was not counted: %s",
                        pipeline, step.name, tool, verdict, exc.message)  # fmt: skip
            return
        if switch is not None:
            _announce(pipeline, step.name, switch)

    async def steer(self, pipeline: Pipeline, step_name: str, tool: str | None, by: str) -> StepStrategy:
        """An operator forces ``tool`` for the step, or (None) resets its watcher."""
        step = next((s for s in pipeline.steps if s.name == step_name), None)
        if step is None:
            raise NotFound(f"pipeline {pipeline.name!r} has no step {step_name!r}", code="unknown_step")
        if step.strategy is None:
            raise BadRequest(f"step {step_name!r} has no strategy (its tools are tried in order at each run)",
                             code="no_strategy")  # fmt: skip
        if tool is not None and tool not in step.tools():
            raise BadRequest(f"tool {tool!r} is not one of step {step_name!r}'s tools ({', '.join(step.tools())})",
                             code="unknown_tool")  # fmt: skip
        async with self._lock(pipeline.name, step_name):
            now = self.clock()
            state = fit(await self.states.get(pipeline.name, step_name), step.tools(), now)
            reason = f"forced by {by}" if tool is not None else f"watcher reset by {by}"
            state, switch = force(state, tool, now, reason)
            await self.states.put(pipeline.name, step_name, state)
        if switch is not None:
            _announce(pipeline.name, step_name, switch)
        else:
            log.info(
                "pipeline %s step %s: %s (active tool %s)", pipeline.name, step_name, reason, state.active
            )
        return view(state)

    async def of(self, pipeline: Pipeline) -> dict[str, StepStrategy]:
        """The state of each of the pipeline's steps with a strategy (a step that never ran: its main)."""
        return _views(pipeline, await self.states.of(pipeline.name), self.clock())

    async def of_all(self, pipelines: Sequence[Pipeline]) -> dict[str, dict[str, StepStrategy]]:
        """``of`` for several pipelines in one read; pipelines without a strategy are left out."""
        if not any(s.strategy for p in pipelines for s in p.steps):
            return {}
        stored = await self.states.all()
        now = self.clock()
        found = {}
        for p in pipelines:
            mine = {step: state for (name, step), state in stored.items() if name == p.name}
            if views := _views(p, mine, now):
                found[p.name] = views
        return found

    async def forget(self, pipeline: str, keep: frozenset[str] = frozenset()) -> None:
        await self.states.drop(pipeline, keep)


def _views(pipeline: Pipeline, stored: dict[str, StrategyState], now: datetime) -> dict[str, StepStrategy]:
    return {
        s.name: view(fit(stored.get(s.name), s.tools(), now))
        for s in pipeline.steps
        if s.strategy is not None
    }


def _announce(pipeline: str, step: str, switch: Switch) -> None:
    log.info("pipeline %s step %s: %s", pipeline, step, switch.sentence())
