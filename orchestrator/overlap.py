"""Overlap policies: what a schedule tick, a data trigger or a manual run does while the pipeline's
previous run still goes (one run of a pipeline at a time on an instance).

- ``skip`` (the default): the new run does not start; the tick or advance is recorded as skipped.
- ``replace``: the running run is cancelled (``POST /runs/{id}/cancel``'s path: containers killed,
  nothing of an unfinished step pushed, it ends ``cancelled``), and once it has ended the new one
  starts. Instance scope only: a federation-wide schedule's previous run may be on another instance,
  which this one cannot cancel.
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


async def make_room(runner: Runner, pipeline: str, policy: str) -> tuple[str | None, str | None]:
    """``(active run, why not)``: ``why not`` is None when a new run of ``pipeline`` may start now
    (nothing running, or ``replace`` stopped the run, whose id comes first); otherwise the reason
    to record for not starting, with the run still going."""
    active = runner.active_run(pipeline)
    if active is None:
        return None, None
    if policy != "replace":
        return active, f"previous run {active} still running (overlap {policy!r})"
    log.info("overlap 'replace': cancelling run %s of %s for a new run", active, pipeline)
    with contextlib.suppress(NotFound, Conflict):  # it ended meanwhile: nothing to cancel
        await runner.cancel(active)
    try:
        await asyncio.wait_for(runner.wait(active), REPLACE_TIMEOUT)
    except TimeoutError:
        return active, f"previous run {active} did not stop within {REPLACE_TIMEOUT:.0f} s (overlap 'replace')"
    return active, None
