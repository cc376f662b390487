"""What crosses the one door for starting a run (``runs/door.py``): why a run is asked for (its
cause), the ask itself, and the door's answer.

Causes, one class each, told apart by ``kind`` (a run's record keeps ``trigger``):
- ``Manual``: ``POST /pipeline/run`` without cron or trigger. It is answered, not recorded as a tick.
- ``CronTick``: a tick of one of this instance's cron schedules.
- ``FederationTick``: a tick of a federation-wide schedule that this instance won.
- ``CatchUp``: a tick missed while the instance (or the whole federation) was down, run at start.
- ``DataTrigger``: a ground-truth advance of the dataset a data trigger watches (either scope).
- ``Backfill``: the ticks of a span, recorded ``queued`` together in tick order.
- ``Retry``: ``POST /runs/{id}/retry``, a run that takes over the done steps of ``retry_of``
  (``runs/retry.py``). Answered as a manual run is.

Decisions:
- ``Fired``: the run starts now; ``note`` says how when not simply (it replaced a run).
- ``Queued``: the run is recorded ``queued`` and starts when admission lets it; ``reason`` says why
  (a backfill's runs are all in ``run_ids``, in tick order).
- ``Skipped``: the overlap policy keeps the run from starting; ``reason`` is the sentence a tick
  record keeps and ``in_the_way`` the run that holds the pipeline (None when it is elsewhere).
- ``Refused``: the run could not be asked for (no such pipeline, the database away, a manual run of
  a busy pipeline): ``error`` is what the API answers, and its message what a tick records.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

from executor.wire.errors import MaoError

from .versions import ReadDefinition

# What a new run does while its pipeline's previous run still goes (``runs/door.py``).
Overlap = Literal["skip", "allow", "queue", "replace"]


@dataclass(frozen=True)
class Manual:
    """Asked through the API; answered, never recorded as a tick. ``registrations_checked``: the
    API has just compared the pipeline's registrations with its pins (its 409), so a run that
    starts at once does not compare them again (its steps still read each through the pins).
    ``definition``: the pipeline's current definition as the API read it for those checks; a run
    that starts at once takes it instead of reading it again, while it is still the stored one."""

    registrations_checked: bool = False
    definition: ReadDefinition | None = None
    kind: ClassVar[Literal["manual"]] = "manual"
    trigger: ClassVar[Literal["manual"]] = "manual"


@dataclass(frozen=True)
class CronTick:
    schedule_id: str
    tick_at: datetime
    kind: ClassVar[Literal["cron_tick"]] = "cron_tick"
    trigger: ClassVar[Literal["cron"]] = "cron"


@dataclass(frozen=True)
class FederationTick:
    schedule_id: str
    tick_at: datetime
    kind: ClassVar[Literal["federation_tick"]] = "federation_tick"
    trigger: ClassVar[Literal["cron"]] = "cron"


@dataclass(frozen=True)
class CatchUp:
    """A missed tick of a schedule of this instance, or of a federation-wide one (``federation``)."""

    schedule_id: str
    tick_at: datetime
    federation: bool = False
    kind: ClassVar[Literal["catch_up"]] = "catch_up"
    trigger: ClassVar[Literal["cron"]] = "cron"


@dataclass(frozen=True)
class DataTrigger:
    trigger_id: str
    dataset: str
    commit: str
    federation: bool = False
    kind: ClassVar[Literal["data_trigger"]] = "data_trigger"
    trigger: ClassVar[Literal["dataset"]] = "dataset"

    @property
    def advance(self) -> str:
        """The advance in the words its records start with."""
        return f"ground-truth of {self.dataset} advanced to {self.commit[:12]}"


@dataclass(frozen=True)
class Backfill:
    """A backfill (an object of its own, ``id``): one run per tick of ``cron`` in [start, end]."""

    id: str
    cron: str
    timezone: str
    start: datetime
    end: datetime
    ticks: tuple[datetime, ...]
    created_by: str | None = None
    kind: ClassVar[Literal["backfill"]] = "backfill"
    trigger: ClassVar[Literal["backfill"]] = "backfill"


@dataclass(frozen=True)
class Retry:
    retry_of: str
    kind: ClassVar[Literal["retry"]] = "retry"
    trigger: ClassVar[Literal["retry"]] = "retry"


Cause = Manual | CronTick | FederationTick | CatchUp | DataTrigger | Backfill | Retry


@dataclass(frozen=True)
class RunElsewhere:
    """A federation-wide schedule's previous run, fired by another instance, that still goes."""

    run_id: str | None
    instance: str


# Asked by the door only when no run of the pipeline goes here and the policy is not ``allow``:
# etcd is read only when its answer can matter.
Elsewhere = Callable[[], Awaitable[RunElsewhere | None]]


@dataclass(frozen=True)
class RunAsk:
    pipeline: str
    cause: Cause
    overlap: Overlap = "skip"
    priority: int = 0
    # Federation-wide ticks: where else the schedule's previous run may still go (``Elsewhere``).
    elsewhere: Elsewhere | None = None
    # The pipeline version to run (docs/versions.md); None: the pipeline as it is when the run starts.
    version: int | None = None

    @property
    def federation(self) -> bool:
        """Federation-wide: the previous run may be on another instance, which this one can neither
        cancel nor wait for."""
        cause = self.cause
        return isinstance(cause, FederationTick) or (
            isinstance(cause, CatchUp | DataTrigger) and cause.federation
        )


@dataclass(frozen=True)
class Fired:
    run_id: str
    note: str | None = None
    kind: ClassVar[Literal["fired"]] = "fired"


@dataclass(frozen=True)
class Queued:
    run_ids: tuple[str, ...]
    reason: str
    kind: ClassVar[Literal["queued"]] = "queued"

    @property
    def run_id(self) -> str:
        return self.run_ids[0]

    @property
    def note(self) -> str:
        """What a fired tick's record says of its run: why it waits."""
        return self.reason


@dataclass(frozen=True)
class Skipped:
    reason: str
    in_the_way: str | None = None
    kind: ClassVar[Literal["skipped"]] = "skipped"


@dataclass(frozen=True)
class Refused:
    error: MaoError
    kind: ClassVar[Literal["refused"]] = "refused"


Decision = Fired | Queued | Skipped | Refused
