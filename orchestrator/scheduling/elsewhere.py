"""Whether a federation-wide schedule's previous run still goes on another instance (which skips the
next tick under overlap ``skip``).

A run fired by another instance counts as running until that instance writes the run's end
(``run_status``, also ``unknown``), leaves the member list, or restarts: its member record's
``started_at`` is later than the tick's ``recorded_at`` (the process that ran it is gone).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ..domain.causes import RunElsewhere
from ..domain.states import TickOutcome
from .book import ScheduleBook


async def running_elsewhere(
    book: ScheduleBook,
    live_members: Callable[[], Awaitable[list[dict[str, Any]]]],
    here: str,
    schedule_id: str,
) -> RunElsewhere | None:
    """The schedule's previous run, if an instance other than ``here`` fired it and it still goes
    there (the door asks only when none goes here and the overlap is not ``allow``)."""
    for tick in await book.recent_ticks(schedule_id, limit=10):
        if tick.get("outcome") != TickOutcome.FIRED:
            continue
        holder = tick.get("instance")
        # Its end is recorded (also "unknown": written once the run had ended), or it was ours
        # (the door knows whether it still runs here).
        if tick.get("run_status") or holder == here:
            return None
        member = next((m for m in await live_members() if m.get("name") == holder), None)
        if member is None:
            return None  # its instance died, and the run with it
        if _started_after(member, tick):
            return None  # its instance restarted since: the run ended with the process that ran it
        return RunElsewhere(tick.get("run_id"), str(holder))
    return None


def _started_after(member: dict[str, Any], tick: dict[str, Any]) -> bool:
    """Whether the member's process started after the tick's record was written (both times come
    from the clock of the instance that fired the tick); False when either time cannot be read."""
    try:
        started = datetime.fromisoformat(str(member.get("started_at")))
        recorded = datetime.fromisoformat(str(tick.get("recorded_at")))
        return started > recorded
    except (TypeError, ValueError):  # unreadable, or one naive and one aware
        return False
