"""Admission: the one door every run goes through, and the order in which waiting runs start.

A run is recorded, then admitted. It starts at once when the instance has room for it; otherwise it
is ``queued`` (its row has status ``queued``; ``GET /queue`` lists the queue with positions). Room:
- no run of the same pipeline is running (one run of a pipeline at a time on an instance: its steps
  share their node-branch work folders), unless the run is ``side_by_side`` (overlap ``allow``: its
  steps take folders of their own when the node branch's is busy); a side-by-side run still makes
  its pipeline busy for the others;
- fewer than ``MAO_MAX_ACTIVE_RUNS`` runs are running (no limit by default).

Queued runs start in order: higher ``priority`` first, then older (when the run was recorded), then
the earlier tick (a backfill's). A queued run whose pipeline is busy does not hold up the runs behind
it: the first run *that can start* starts. Every change that can make room (a run ends, one is
cancelled or recorded) runs one admission pass, synchronously, so there is no polling.

What a trigger asks for when its pipeline is busy (``Busy``):
- ``REFUSE``: 409 ``run_in_progress`` (a manual run without ``overlap``; a tick with overlap ``skip``
  records it as skipped). A run merely waiting for the instance's limit counts as busy too.
- ``QUEUE_ONE``: overlap ``queue``: the run waits for the pipeline's run to end; at most one waiting
  run per pipeline, so a later one is refused (its tick recorded as skipped with the reason).
- ``QUEUE``: any number wait, in order (backfill: one run per tick).
- ``ALLOW``: overlap ``allow``: never refused; the run starts beside the pipeline's runs, or waits
  only for the instance's limit.

Queued runs survive a restart: their rows carry what starting them needs (pipeline, trigger,
``schedule_id``, ``tick_at``/``trigger_*``, ``priority``); ``Runner.restore_queue`` re-reads them at
start, after the reconciler closed the runs the previous process left running, and admits them in
order. Pools (a step's ``pool``) are held per step, not per run: see ``runs/pools.py``.

This module holds the decisions (pure, unit-tested in tests/unit/test_admission.py) and the
bookkeeping; the runner does the I/O (recording, starting, ending runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine, Iterable
from enum import StrEnum
from typing import Any

from ..domain.queue import Ticket, in_order
from ..errors import Conflict
from ..tasks import spawn

log = logging.getLogger(__name__)


class RunInProgress(Conflict):
    code = "run_in_progress"


class Busy(StrEnum):
    """What a new run does when its pipeline already has a run going or waiting."""

    REFUSE = "refuse"
    QUEUE_ONE = "queue_one"
    QUEUE = "queue"
    ALLOW = "allow"


def admissible(
    queue: Iterable[Ticket], busy: Collection[str], running: int, limit: int | None
) -> list[Ticket]:
    """The queued runs that start now, in order: ``busy`` are the pipelines with a run going,
    ``running`` how many runs are going, ``limit`` the instance's limit (None: none). A run of a busy
    pipeline (or of one picked just before it) is passed over, not waited for, unless it is
    ``side_by_side``."""
    picked: list[Ticket] = []
    taken = set(busy)
    for ticket in in_order(queue):
        if limit is not None and running + len(picked) >= limit:
            break
        if ticket.pipeline in taken and not ticket.side_by_side:
            continue
        taken.add(ticket.pipeline)
        picked.append(ticket)
    return picked


class Admission:
    """The queue and the running set of one runner. ``launch(ticket)`` starts a queued run (the
    runner's coroutine: it calls ``started`` once the run's task exists, or ``finished`` if it could
    not start); every run reserved here must end with ``finished``."""

    def __init__(self, limit: int | None, launch: Callable[[Ticket], Coroutine[Any, Any, None]]) -> None:
        self.limit = limit
        self._launch = launch
        self._running: dict[str, str] = {}  # run id -> pipeline: running, or starting
        self._queue: dict[str, Ticket] = {}  # run id -> ticket: recorded, waiting
        self._recording: dict[str, Ticket] = {}  # queued, its record being written
        self._left: dict[str, asyncio.Event] = {}  # run id -> set once it has a task or has ended
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    # -- questions --------------------------------------------------------------------------------
    def running_run(self, pipeline: str) -> str | None:
        return next((r for r, p in self._running.items() if p == pipeline), None)

    def running_runs(self, pipeline: str) -> list[str]:
        """Oldest first: several only when side-by-side runs were admitted."""
        return [r for r, p in self._running.items() if p == pipeline]

    def waiting_runs(self, pipeline: str) -> list[str]:
        waiting = [t for t in (*self._queue.values(), *self._recording.values()) if t.pipeline == pipeline]
        return [t.run_id for t in in_order(waiting)]

    def waiting_run(self, pipeline: str) -> str | None:
        waiting = [t for t in (*self._queue.values(), *self._recording.values()) if t.pipeline == pipeline]
        return in_order(waiting)[0].run_id if waiting else None

    def active_run(self, pipeline: str) -> str | None:
        """The pipeline's running run, else the first of its waiting ones."""
        return self.running_run(pipeline) or self.waiting_run(pipeline)

    def active_runs(self, pipeline: str) -> list[str]:
        """The pipeline's running runs (oldest first), then its waiting ones (in order)."""
        return self.running_runs(pipeline) + self.waiting_runs(pipeline)

    def is_queued(self, run_id: str) -> bool:
        return run_id in self._queue or run_id in self._recording

    def leaving(self, run_id: str) -> asyncio.Event | None:
        """Set once the run has left the queue (it has a task, or it ended); None if not queued."""
        return self._left.get(run_id)

    @property
    def depth(self) -> int:
        return len(self._queue) + len(self._recording)

    def listing(self) -> list[dict[str, Any]]:
        """``GET /queue``: the waiting runs in the order they will be considered, 1-based."""
        busy = set(self._running.values())
        full = self.limit is not None and len(self._running) >= self.limit
        result = []
        for position, ticket in enumerate(in_order(self._queue.values()), start=1):
            if ticket.pipeline in busy and not ticket.side_by_side:
                why = f"run {self.running_run(ticket.pipeline)} of {ticket.pipeline} is running"
            elif full:
                why = f"{len(self._running)} runs are running (MAO_MAX_ACTIVE_RUNS={self.limit})"
            else:
                why = f"an earlier run of {ticket.pipeline} is queued ahead of it"
            result.append(
                {
                    "position": position,
                    "id": ticket.run_id,
                    "pipeline": ticket.pipeline,
                    "priority": ticket.priority,
                    "trigger": ticket.trigger,
                    "queued_at": ticket.queued_at.isoformat(),
                    "tick_at": ticket.tick_at.isoformat() if ticket.tick_at else None,
                    "schedule_id": ticket.schedule_id,
                    "retry_of": ticket.retry_of,
                    "waiting_for": why,
                }
            )
        return result

    # -- changes (all synchronous: no await between a decision and its bookkeeping) ---------------
    def reserve(self, ticket: Ticket, busy: Busy) -> bool:
        """Before the run is recorded: True when it may start at once (it is counted as running),
        False when it is to wait (call ``enqueue`` once it is recorded as ``queued``, or ``drop``).
        Raises RunInProgress when ``busy`` forbids it to wait."""
        name = ticket.pipeline
        running, waiting = self.running_run(name), self.waiting_run(name)
        if busy is Busy.REFUSE and (running or waiting):
            what = f"is already running (run {running})" if running else f"has run {waiting} queued"
            raise RunInProgress(
                f"pipeline {name!r} {what}; wait for it to end, or ask for overlap 'queue'",
                run_id=running or waiting,
            )
        if busy is Busy.QUEUE_ONE and waiting:
            raise RunInProgress(
                f"pipeline {name!r} already has run {waiting} waiting"
                + (f" for run {running} to end" if running else " in the queue")
                + " (overlap 'queue': at most one waiting run per pipeline)",
                run_id=waiting,
            )
        if ticket.side_by_side or (running is None and waiting is None):
            picked = admissible(
                [*self._queue.values(), ticket], self._running.values(), len(self._running), self.limit
            )
            if ticket in picked:
                self._running[ticket.run_id] = name
                return True
        self._recording[ticket.run_id] = ticket
        self._left[ticket.run_id] = asyncio.Event()
        return False

    def enqueue(self, tickets: Iterable[Ticket]) -> None:
        """Recorded as queued (reserved, or re-read at start): they wait for their turn."""
        for ticket in tickets:
            self._recording.pop(ticket.run_id, None)
            self._queue[ticket.run_id] = ticket
            self._left.setdefault(ticket.run_id, asyncio.Event())
        self.admit()

    def drop(self, run_id: str) -> Ticket | None:
        """Forget a run that will not start (its record failed, or it was cancelled while queued);
        the ticket it had in the queue, if any."""
        ticket = self._queue.pop(run_id, None) or self._recording.pop(run_id, None)
        if self._running.pop(run_id, None) is not None or ticket is not None:
            self._release(run_id)
            self.admit()
        return ticket

    def resumed(self, run_id: str, pipeline: str) -> None:
        """A run a previous process left is running again (``Runner.resume``, at start): it counts
        as running, whatever the limit (it was admitted before)."""
        self._running[run_id] = pipeline

    def started(self, run_id: str) -> None:
        """The run's task exists: whoever waited for it to leave the queue can wait for the task."""
        self._release(run_id)

    def finished(self, run_id: str) -> None:
        """The run has ended (or could not start): its room goes to the next in the queue."""
        self._running.pop(run_id, None)
        self._release(run_id)
        self.admit()

    def requeue_later(self, ticket: Ticket, delay: float) -> None:
        """A run that could not start for a reason that passes (the database away): it gives its room
        back and queues again after ``delay`` seconds (its row is still ``queued``). Meanwhile it
        counts as waiting for its pipeline but is not admitted."""
        self._running.pop(ticket.run_id, None)
        self._recording[ticket.run_id] = ticket
        self._left.setdefault(ticket.run_id, asyncio.Event())

        def again() -> None:
            if self._recording.get(ticket.run_id) is ticket:
                self.enqueue([ticket])

        asyncio.get_running_loop().call_later(delay, again)
        self.admit()

    def admit(self) -> None:
        """Start every queued run that has room now, in order."""
        if self.closing:
            return
        for ticket in admissible(
            self._queue.values(), self._running.values(), len(self._running), self.limit
        ):
            del self._queue[ticket.run_id]
            self._running[ticket.run_id] = ticket.pipeline
            log.info(
                "run %s of %s leaves the queue (priority %d)", ticket.run_id, ticket.pipeline, ticket.priority
            )
            spawn(self._launch(ticket), f"start queued run {ticket.run_id}", self._tasks)

    async def close(self) -> None:
        """Stop admitting (shutdown: queued runs stay queued in the database for the next start)."""
        self.closing = True
        for event in self._left.values():
            event.set()
        tasks = list(self._tasks)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _release(self, run_id: str) -> None:
        if (event := self._left.pop(run_id, None)) is not None:
            event.set()
