"""What becomes of the ticks a schedule missed while its instance was down (the catch-up policy).

``catchup``:
- ``latest`` (the default): one run, standing for the latest missed tick; the others are missed,
  superseded by it.
- ``all``: every missed tick runs, in order, one at a time, each recorded with its own tick time (the
  latest ``MAX_REPLAY`` of them; older ones are missed).
- ``none``: nothing runs; every missed tick is recorded as missed.
``catchup_window`` (seconds): ticks older than that (at start) are missed whatever the policy, so an
instance that was down for a month does not replay a month of runs.

Pure functions (no clock, no I/O): unit-tested in tests/unit/test_catchup_policy.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

# At most this many missed ticks are recorded one by one; older ones are summed up in one record.
MAX_RECORDED = 1000
# catchup 'all' replays at most this many (the latest); older ones are missed (as backfill's bound).
MAX_REPLAY = 1000


@dataclass
class CatchUpPlan:
    run: list[datetime] = field(default_factory=list)  # in order
    missed: list[tuple[datetime, str]] = field(default_factory=list)  # (tick, reason), in order


@dataclass(frozen=True)
class Wording:
    """How the reasons name the outage: an instance's own, or the whole federation's."""

    down: str = "the instance was down"
    started: str = "the instance started"


INSTANCE = Wording()


def plan(
    missed: list[datetime],
    catchup: str,
    window: int | None,
    now: datetime,
    earlier: int = 0,
    wording: Wording = INSTANCE,
) -> CatchUpPlan:
    """Decide about ``missed`` (in order). ``earlier``: ticks missed before ``missed[0]`` that were not
    enumerated (too many to list); they are summed up in the first record."""
    result = CatchUpPlan()
    if window is not None:
        oldest_allowed = now - timedelta(seconds=window)
        too_old = [t for t in missed if t < oldest_allowed]
        missed = [t for t in missed if t >= oldest_allowed]
        reason = f"older than the catch-up window ({window} s) when {wording.started}"
        result.missed += [(t, reason) for t in too_old]
    if catchup == "none":
        result.missed += [(t, f"missed while {wording.down} (catchup 'none')") for t in missed]
    elif catchup == "all":
        result.run = missed[-MAX_REPLAY:]
        reason = f"beyond the {MAX_REPLAY} latest missed ticks that catchup 'all' replays"
        result.missed += [(t, reason) for t in missed[:-MAX_REPLAY]]
    elif missed:  # latest
        latest = missed[-1]
        reason = f"missed while {wording.down}; superseded by the catch-up run of {latest.isoformat()}"
        result.missed += [(t, reason) for t in missed[:-1]]
        result.run = [latest]
    result.missed.sort(key=lambda item: item[0])
    if len(result.missed) > MAX_RECORDED:
        dropped = len(result.missed) - MAX_RECORDED
        result.missed = result.missed[dropped:]
        earlier += dropped
    if earlier:
        if result.missed:
            tick, reason = result.missed[0]
            result.missed[0] = (
                tick,
                f"{reason} (and {earlier} earlier missed tick(s), not listed one by one)",
            )
        elif result.run:
            note = f"{earlier} earlier tick(s) were missed while {wording.down}, not listed one by one"
            result.missed.append((result.run[0], note))
    return result
