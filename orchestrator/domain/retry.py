"""Retry from the failed step: which steps of a new run are taken from the run it retries (``reused``)
and which run again, each with the reason the run's record shows.

A step is reused when it is done in the retried run (succeeded, cached or itself reused), its
definition is the one that run ran, its output still is what ``ground-truth`` holds (``stale``: the
engine's check when the retry starts) and no step it needs runs again. Everything else runs: the
steps that failed, were cancelled, skipped or conflicted, steps the retried run did not have, and
every step downstream of one that runs (a dependant must see its needs' new output).

Pure functions on names and recorded values, tested over generated graphs without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from enum import StrEnum

from .graph import StepNode
from .states import DONE_STEP, StepStatus


class Action(StrEnum):
    REUSE = "reuse"
    RUN = "run"


class Definition(StrEnum):
    """Which definition a retry runs: the one the retried run ran with, or the pipeline's current one."""

    RECORDED = "recorded"
    CURRENT = "current"


@dataclass(frozen=True)
class PastStep:
    """A step of the retried run as its record holds it."""

    name: str
    status: StepStatus
    output_dataset: str
    merge_commit: str | None = None  # ground-truth as the step left it (its merge, or the tip it found)


@dataclass(frozen=True)
class Planned:
    step: str
    action: Action
    reason: str


def short(commit: str | None) -> str:
    return commit[:12] if commit else "none"


def plan_retry(
    retried: str,
    past: Mapping[str, PastStep],
    nodes: Sequence[StepNode],
    changed: Set[str] = frozenset(),
    stale: Mapping[str, str] | None = None,
) -> list[Planned]:
    """One entry per step of ``nodes`` (the new run's graph, in its order): reuse or run, and why.
    ``changed``: steps whose definition differs from the one the retried run ran; ``stale``: steps
    whose output ground-truth no longer holds, with the reason."""
    stale = stale or {}
    by_name = {n.name: n for n in nodes}
    decided: dict[str, Planned] = {}

    def decide(name: str) -> Planned:
        # Needs first: the graph is acyclic (checked at init) and a few dozen steps deep at most.
        if name in decided:
            return decided[name]
        node = by_name[name]
        needs = [decide(need) for need in node.needs if need in by_name]
        step = past.get(name)
        if step is None:
            planned = Planned(name, Action.RUN, f"run {retried} had no step {name}")
        elif step.status not in DONE_STEP:
            planned = Planned(name, Action.RUN, f"{step.status.value} in run {retried}")
        elif name in changed:
            planned = Planned(name, Action.RUN, f"its definition changed since run {retried}")
        elif name in stale:
            planned = Planned(name, Action.RUN, stale[name])
        elif again := [p.step for p in needs if p.action is Action.RUN]:
            planned = Planned(name, Action.RUN, f"downstream of {', '.join(again)} (run again)")
        else:
            planned = Planned(name, Action.REUSE, f"{step.status.value} in run {retried}")
        decided[name] = planned
        return planned

    return [decide(n.name) for n in nodes]


def stale_steps(
    retried: str,
    past: Mapping[str, PastStep],
    candidates: Sequence[str],
    tips: Mapping[str, str],
    unreadable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Of the steps ``candidates`` to reuse, those whose output ``ground-truth`` no longer holds,
    with the reason. ``tips``: each output dataset's ground-truth tip now; ``unreadable``: datasets
    whose tip could not be read, with why (their steps run again: nothing vouches for them).

    A dataset still holds what the retried run left when its tip is a commit one of that run's done
    steps recorded for it: nobody merged since. Anything else (someone merged, a step's merge was
    never recorded) runs the step again."""
    unreadable = unreadable or {}
    reasons: dict[str, str] = {}
    for name in candidates:
        dataset = past[name].output_dataset
        if dataset in unreadable:
            reasons[name] = f"ground-truth of {dataset} could not be read ({unreadable[dataset]})"
            continue
        left = {
            p.merge_commit
            for p in past.values()
            if p.output_dataset == dataset and p.status in DONE_STEP and p.merge_commit
        }
        tip = tips.get(dataset)
        if tip is None or tip not in left:
            reasons[name] = (
                f"ground-truth of {dataset} moved since run {retried} (its tip is {short(tip)}, "
                f"the run left {', '.join(sorted(short(c) for c in left)) or 'no merge'})"
            )
    return reasons


def reused(plan: Sequence[Planned]) -> list[str]:
    return [p.step for p in plan if p.action is Action.REUSE]
