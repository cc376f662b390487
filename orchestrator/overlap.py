"""Overlap policies: what a schedule tick, a data trigger or a manual run does while the pipeline's
previous run still goes (one run of a pipeline at a time on an instance, unless ``allow``).

- ``skip`` (the default): the new run does not start; the tick or advance is recorded as skipped.
- ``replace``: the running run is cancelled (``POST /runs/{id}/cancel``'s path: containers killed,
  nothing of an unfinished step pushed, it ends ``cancelled``), and once it has ended the new one
  starts. Instance scope only: a federation-wide schedule's previous run may be on another instance,
  which this one cannot cancel.
- ``allow``: the new run starts beside the running one(s) (``Runner.start(..., side_by_side=True)``);
  a step whose node-branch folder is busy takes a folder of its own, and the outputs are combined on
  the node branch (runs/attempt.py, ``DatasetRepo.commit_worktree``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .errors import Conflict, NotFound

if TYPE_CHECKING:
    from .pipelines.runner import Runner

log = logging.getLogger(__name__)

# How long a replaced run may take to stop before the new one gives up (its containers are killed
# at once; this bounds a stuck push or Docker call, not normal cancellation).
REPLACE_TIMEOUT = 120.0


def side_by_side(policy: str | None) -> dict[str, bool]:
    """``Runner.start``'s keyword for a trigger's policy: ``{"side_by_side": True}`` for ``allow``."""
    return {"side_by_side": True} if policy == "allow" else {}


async def make_room(runner: Runner, pipeline: str, policy: str) -> tuple[str | None, str | None]:
    """``(active run, why not)``: ``why not`` is None when a new run of ``pipeline`` may start now
    (nothing running, or ``replace`` stopped the run, whose id comes first); otherwise the reason
    to record for not starting, with the run still going."""
    active = runner.active_run(pipeline)
    if active is None or policy == "allow":
        return None, None
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
