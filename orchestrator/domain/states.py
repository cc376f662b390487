"""Run, step, attempt, backfill and tick states, and the only changes between them that are allowed.

One table per kind. ``advance(kind_table, old, new)`` is called before every status write of the
engine: an illegal change is a bug in the engine, so it raises ``IllegalTransition`` (an internal
error) instead of writing a state the record could never honestly have reached.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar


class RunStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CONFLICT = "conflict"
    SKIPPED = "skipped"  # a need did not succeed, or the step never started before a crash
    CANCELLED = "cancelled"
    CACHED = "cached"  # same inputs as the last success: no container, no commit
    REUSED = "reused"  # a retry took the step's success from the run it retries: nothing ran


class AttemptStatus(StrEnum):
    """How an attempt (one object on a backend) ended: the seam's typed ends
    (executors/seam.EndKind), ``completed`` being ``succeeded``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STALLED = "stalled"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    OOM_KILLED = "oom_killed"
    NODE_LOST = "node_lost"
    IMAGE_UNAVAILABLE = "image_unavailable"
    UNSCHEDULABLE = "unschedulable"
    LOST = "lost"


class MergeState(StrEnum):
    """The ground-truth vote of a step's output (``merge`` in the run record)."""

    MERGED = "merged"
    QUEUED = "queued"  # the federation was unreachable; retried later (merging.voting)
    CONFLICT = "conflict"


class BackfillStatus(StrEnum):
    """A backfill's state (``GET /backfills``): never written, derived from its runs' states each
    time it is read (``store.backfills.backfill_status``), so it has no transition table."""

    QUEUED = "queued"  # no run of it started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every run ended, one failed (or was cancelled by itself)
    CANCELLED = "cancelled"  # the backfill was cancelled


class TickOutcome(StrEnum):
    """What one tick of a schedule did (a tick record's ``outcome``, local or federation-wide)."""

    CLAIMED = "claimed"  # federation-wide: an instance took the tick, its run not decided yet
    FIRED = "fired"
    SKIPPED = "skipped"
    MISSED = "missed"  # the instance was down and the catch-up policy did not run it


S = TypeVar("S", RunStatus, StepStatus, AttemptStatus, TickOutcome)

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset(
        {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}),
    # A queued merge that conflicts later fails a run that had succeeded (see merging.voting).
    RunStatus.SUCCEEDED: frozenset({RunStatus.FAILED}),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.PENDING: frozenset(
        {
            StepStatus.RUNNING,
            StepStatus.SKIPPED,
            StepStatus.CANCELLED,
            StepStatus.CACHED,
            StepStatus.REUSED,
            StepStatus.FAILED,  # e.g. the run timed out before the step could start
        }
    ),
    StepStatus.RUNNING: frozenset(
        {
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.CONFLICT,
            StepStatus.CANCELLED,
            StepStatus.CACHED,
        }
    ),
    # A queued merge settles later, possibly as a conflict.
    StepStatus.SUCCEEDED: frozenset({StepStatus.CONFLICT}),
    StepStatus.FAILED: frozenset(),
    StepStatus.CONFLICT: frozenset(),
    StepStatus.SKIPPED: frozenset(),
    StepStatus.CANCELLED: frozenset(),
    StepStatus.CACHED: frozenset(),
    StepStatus.REUSED: frozenset(),
}

# Every end is final: an attempt runs once.
ATTEMPT_TRANSITIONS: dict[AttemptStatus, frozenset[AttemptStatus]] = {
    AttemptStatus.RUNNING: frozenset(set(AttemptStatus) - {AttemptStatus.RUNNING}),
    **{status: frozenset() for status in AttemptStatus if status is not AttemptStatus.RUNNING},
}

# A federation-wide tick is claimed first, then fired or skipped; every other outcome is final.
TICK_TRANSITIONS: dict[TickOutcome, frozenset[TickOutcome]] = {
    TickOutcome.CLAIMED: frozenset({TickOutcome.FIRED, TickOutcome.SKIPPED}),
    TickOutcome.FIRED: frozenset(),
    TickOutcome.SKIPPED: frozenset(),
    TickOutcome.MISSED: frozenset(),
}

ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING})
ENDED_STEP = frozenset(s for s, nexts in STEP_TRANSITIONS.items() if s is not StepStatus.PENDING) - {
    StepStatus.RUNNING
}
# A step whose dependants may start.
DONE_STEP = frozenset({StepStatus.SUCCEEDED, StepStatus.CACHED, StepStatus.REUSED})


class IllegalTransition(RuntimeError):
    """The engine tried a state change the tables do not allow: a bug, never bad input."""


def check(table: dict[S, frozenset[S]], old: S, new: S) -> S:
    """``new`` if ``old -> new`` is allowed; raises IllegalTransition otherwise."""
    if new not in table[old]:
        raise IllegalTransition(f"{type(old).__name__}: {old.value} -> {new.value} is not allowed")
    return new


def ended(run: RunStatus) -> bool:
    return run not in ACTIVE_RUN
