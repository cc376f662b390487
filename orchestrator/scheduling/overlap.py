"""Overlap policies: what a schedule tick, a data trigger or a manual run does while the pipeline's
previous run still goes (one run of a pipeline at a time on an instance, unless ``allow``).

- ``skip`` (the default): the new run does not start; the tick or advance is recorded as skipped.
- ``replace``: the running run is cancelled (``POST /runs/{id}/cancel``'s path: containers killed,
  nothing of an unfinished step pushed, it ends ``cancelled``), and once it has ended the new one
  starts. Instance scope only: a federation-wide schedule's previous run may be on another instance,
  which this one cannot cancel.
- ``queue``: the new run waits ``queued`` (``runs/admission.py``) and starts when the running one
  ends; at most one waiting run per pipeline, so a later one is skipped (recorded with the reason).
  Instance scope only, like ``replace``.
- ``allow``: the new run starts beside the running one(s) (``Runner.start(..., busy=Busy.ALLOW)``:
  admission lets it in although its pipeline is busy, as the instance's limit allows); a step whose
  node-branch folder is busy takes a folder of its own, and the outputs are combined on the node
  branch (runs/attempt.py, ``DatasetRepo.commit_worktree``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ..errors import Conflict, NotFound
from ..runs.admission import Busy

if TYPE_CHECKING:
    from ..runs.engine import Runner

log = logging.getLogger(__name__)

# How long a replaced run may take to stop before the new one gives up (its containers are killed
# at once; this bounds a stuck push or Docker call, not normal cancellation).
REPLACE_TIMEOUT = 120.0


def busy_for(policy: str | None) -> Busy:
    """What ``Runner.start`` does when the pipeline is busy, under ``policy``."""
    if policy == "queue":
        return Busy.QUEUE_ONE
    return Busy.ALLOW if policy == "allow" else Busy.REFUSE


async def make_room(runner: Runner, pipeline: str, policy: str) -> tuple[str | None, str | None]:
    """``(active run, why not)``: ``why not`` is None when a new run of ``pipeline`` may start now
    (nothing running, ``allow``, ``replace`` stopped the run(s), or ``queue`` has room for one waiting run behind
    it: the active run's id comes first); otherwise the reason to record for not starting, with the
    run in the way."""
    active = runner.active_run(pipeline)
    if active is None or policy == "allow":
        return None, None
    if policy == "queue":
        waiting = runner.waiting_run(pipeline)
        if waiting is None:
            return active, None
        return waiting, (
            f"run {waiting} already waits for run {active} to end "
            "(overlap 'queue': at most one waiting run per pipeline)"
            if waiting != active
            else f"run {waiting} already waits in the queue (overlap 'queue': at most one waiting run per pipeline)"
        )
    if policy != "replace":
        return active, f"previous run {active} still running (overlap {policy!r})"
    # Every run still going (several when earlier ones were allowed side by side).
    for run_id in runner.active_runs(pipeline):
        log.info("overlap 'replace': cancelling run %s of %s for a new run", run_id, pipeline)
        with contextlib.suppress(NotFound, Conflict):  # it ended meanwhile: nothing to cancel
            await runner.cancel(run_id)
        try:
            await asyncio.wait_for(runner.wait(run_id), REPLACE_TIMEOUT)
        except TimeoutError:
            return run_id, f"previous run {run_id} did not stop within {REPLACE_TIMEOUT:.0f} s (overlap 'replace')"
    return active, None


def started_note(runner: Runner, run_id: str, active: str | None, policy: str) -> str | None:
    """What a fired tick's record says about how its run started, when not simply at once."""
    if active is not None and policy == "replace":
        return f"replaced run {active} (overlap 'replace')"
    if active is not None and policy == "queue":
        return f"queued behind run {active} (overlap 'queue')"
    if runner.is_queued(run_id):
        return "queued: the instance has no room for it yet (GET /queue)"
    return None
