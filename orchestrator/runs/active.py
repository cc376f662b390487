"""A run this process is executing (``ActiveRun``), all of them (``LiveRuns``), and the ways a run
can be stopped (``Stop``)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..domain.graph import StepNode
from ..domain.pipeline import Pipeline
from ..domain.states import STEP_TRANSITIONS, AttemptStatus, RunStatus, StepStatus, check
from ..store.run_changes import AttemptEnded
from ..store.run_views import RunView


@dataclass(frozen=True)
class Stop:
    """Why a run is being stopped, and the status each kind of record takes."""

    reason: str
    run: RunStatus
    step: StepStatus  # a step that was running
    pending: StepStatus  # a step that never started
    attempt: AttemptStatus


CANCELLED = Stop("cancelled on request", RunStatus.CANCELLED, StepStatus.CANCELLED, StepStatus.CANCELLED, AttemptStatus.CANCELLED)  # fmt: skip
SHUTDOWN = Stop("cancelled: the orchestrator shut down", RunStatus.FAILED, StepStatus.FAILED, StepStatus.SKIPPED, AttemptStatus.CANCELLED)  # fmt: skip


def describe(exc: BaseException) -> str:
    """An exception nobody expected, for a record: its type and first line, bounded; a full disk
    says so first (the operator's fix is the disk, not the code)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    told = f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({told})"
    return told


def timed_out(limit: float) -> Stop:
    return Stop(f"the run exceeded its run_timeout of {limit:g} s", RunStatus.FAILED, StepStatus.FAILED, StepStatus.SKIPPED, AttemptStatus.TIMED_OUT)  # fmt: skip


@dataclass
class ActiveRun:
    """A run this process is executing; the in-memory truth its records follow."""

    id: str
    pipeline: Pipeline
    nodes: list[StepNode]
    status: RunStatus = RunStatus.PENDING
    steps: dict[str, StepStatus] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    voting: set[str] = field(default_factory=set)  # steps past the point of no return
    # Steps whose tool has ended (committing, then voting): a shutdown lets them finish.
    finishing: set[str] = field(default_factory=set)
    stop: Stop | None = None
    first_error: str | None = None
    # For the cache check: image ids and input tips already learnt in this run. A tip is forgotten
    # when a step of this run merges into that dataset (its dependants must see the new one).
    image_ids: dict[str, str] = field(default_factory=dict)
    input_tips: dict[str, str] = field(default_factory=dict)
    # Admission's order, which pool slots follow too: higher priority, then older.
    priority: int = 0
    queued_at: datetime | None = None
    side_by_side: bool = False  # overlap ``allow``: admitted beside the pipeline's other runs
    retry_of: str | None = None  # the run it retries: its done steps are taken over at the start
    # The API compared its registrations with the pins just before it started (``Runner.start``).
    registrations_checked: bool = False
    # Each step's record fields as last set (status aside): what the run's end writes again for a
    # step whose own record write failed (``Recorder.close``).
    step_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A step's attempt that succeeded, its end not recorded yet: written with the step's own end
    # (one transaction), or by the run's close when that write failed.
    attempt_ends: dict[str, AttemptEnded] = field(default_factory=dict)
    # Steps whose end is in memory only, left for the run's close to write in its transaction: the
    # last step to end (``Recorder.set_step``); written on their own if the close does not come.
    left_for_close: set[str] = field(default_factory=set)
    # Shutdown: the run is left where it is (its records and objects) for the next start to resume.
    detaching: bool = False
    # Its record as read once it ended (for the metrics), handed to a waiting caller: no second read.
    ended_record: RunView | None = None

    def note(self, name: str, status: StepStatus, **fields: Any) -> None:
        """The step's new status in memory (checked), and the fields its record is to carry."""
        self.steps[name] = check(STEP_TRANSITIONS, self.steps[name], status)
        self.step_fields.setdefault(name, {}).update(fields)

    def order(self) -> tuple[int, datetime, str]:
        return (-self.priority, self.queued_at or _EPOCH, self.id)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LiveRuns:
    """The runs this process is executing now, and each run's task (its result: the run's record
    as read after its close). Shared by the engine's parts: the launcher adds to it, the driver
    takes a run out when it ends, stopping and shutdown reach every run through it."""

    def __init__(self) -> None:
        self.runs: dict[str, ActiveRun] = {}  # run id -> run
        self.tasks: dict[str, asyncio.Task[RunView | None]] = {}  # run id -> task

    def add(self, run: ActiveRun, execute: Coroutine[Any, Any, RunView | None]) -> None:
        """``run`` is executing: ``execute`` becomes its task, forgotten when it ends."""
        self.runs[run.id] = run
        task = asyncio.create_task(execute, name=f"run {run.id}")
        self.tasks[run.id] = task
        task.add_done_callback(lambda _: self.tasks.pop(run.id, None))
