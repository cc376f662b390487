"""The run queue's order: a queued run as admission sees it (``Ticket``) and the order in which waiting
runs start (``in_order``: higher ``priority`` first, then older, then the earlier tick). The decisions
about them are ``runs.admission``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

MIN_PRIORITY, MAX_PRIORITY = -1000, 1000


@dataclass(frozen=True)
class Ticket:
    """A run as admission sees it: what orders it and what its listing shows."""

    run_id: str
    pipeline: str
    trigger: str
    priority: int
    queued_at: datetime
    tick_at: datetime | None = None
    schedule_id: str | None = None
    side_by_side: bool = False  # overlap ``allow``: admissible although its pipeline is busy
    version: int | None = None  # the pipeline version asked for; None: the current one when it starts
    retry_of: str | None = None  # the run it retries (runs/retry.py): its done steps are reused

    def order(self) -> tuple[int, datetime, datetime, str]:
        return (-self.priority, self.queued_at, self.tick_at or self.queued_at, self.run_id)


def in_order(tickets: Iterable[Ticket]) -> list[Ticket]:
    return sorted(tickets, key=Ticket.order)
