"""What the schedulers still ask of the overlap policies until each asks the door (``runs/door.py``,
where the policies live now)."""

from __future__ import annotations

from typing import cast

from ..domain.causes import Fired, Overlap
from ..runs import door
from ..runs.admission import Busy
from ..runs.door import Runs


def busy_for(policy: str | None) -> Busy:
    return door.busy_for(cast(Overlap | None, policy))


async def make_room(runs: Runs, pipeline: str, policy: str) -> tuple[str | None, str | None]:
    return await door.make_room(runs, pipeline, cast(Overlap, policy))


def started_note(runs: Runs, run_id: str, active: str | None, policy: str) -> str | None:
    """What a fired tick's record says about how its run started, when not simply at once."""
    decision = door.started(runs, run_id, active, cast(Overlap, policy))
    return decision.note if isinstance(decision, Fired) else decision.reason
