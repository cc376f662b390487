"""Request bodies of ``POST /pipeline/run`` and ``POST /pipeline/backfill``, and the policy words they carry.

Unknown fields are errors (a misspelt ``catchup`` must not silently become the default). Fields whose
problems have long had their own error code (``cron``, ``timezone``, ``scope``, ``placement``) are
checked by the services that own them, so their 400s keep those codes.

``POST /pipeline/run`` does one of three things, told apart by its fields: run now (no ``cron``, no
``trigger``), schedule (``cron``) or arm a data trigger (``trigger: {dataset}``). The body is read as
one flat ``RunRequest`` (its OpenAPI schema and its field errors are the prototype's), then
``RunRequest.action()`` turns it into one of the union ``RunAction`` (``RunNow``, ``ScheduleRun``,
``ArmTrigger``, discriminated by ``kind``), checking what the combination of fields allows in the
order, and with the error codes, the API has always answered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool

from executor.wire.names import name_problem

from ..domain.causes import Overlap
from ..domain.pipeline import Name
from ..domain.queue import MAX_PRIORITY, MIN_PRIORITY
from ..domain.schedule import Catchup
from ..errors import BadRequest

# What the door does (``overlap``, runs/door.py): ``replace`` cancels the running run(s), ``queue``
# waits for them, ``allow`` runs beside them (each run's steps in folders of their own).
SUPPORTED_OVERLAP = ("skip", "replace", "queue", "allow")
# A federation-wide schedule or trigger's previous run may be on another instance, which this one
# can neither cancel nor wait for: no ``replace`` or ``queue``; ``allow`` starts regardless of it.
FEDERATION_OVERLAP = ("skip", "allow")
MAX_CATCHUP_WINDOW = 366 * 86400
Scope = Literal["instance", "federation"]
SCOPES: tuple[Scope, ...] = ("instance", "federation")


Priority = Annotated[int, Strict(), Field(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
# A pipeline version number (GET /pipeline/{name}/versions): 1, 2, ...
VersionNumber = Annotated[
    int, Strict(), Field(ge=1, le=2**31 - 1, description="a version of the pipeline's definition")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DatasetTrigger(_Request):
    """Run the pipeline each time this dataset's ground-truth advances."""

    dataset: Name


class RunRequest(_Request):
    """``POST /pipeline/run``: run now (no ``cron``, no ``trigger``), schedule (``cron``) or arm a data
    trigger (``trigger: {dataset}``)."""

    name: Any = None
    cron: Any = None
    timezone: Any = None
    scope: Any = None
    placement: Any = None
    wait: StrictBool = True
    # A second schedule for the pipeline instead of replacing its current one (the prototype replaced).
    add: StrictBool = False
    overlap: Overlap | None = None
    catchup: Catchup | None = None
    catchup_window: int | None = Field(default=None, gt=0, le=MAX_CATCHUP_WINDOW)
    trigger: DatasetTrigger | None = None
    # Admission order (runs/admission.py): higher first, then older. Instance scope only.
    priority: Priority | None = None
    # Run this earlier version of the definition (a run now only: a schedule or trigger is a 400).
    version: VersionNumber | None = None


class BackfillRequest(_Request):
    """``POST /pipeline/backfill``: one run per tick of ``cron`` in ``[from, to]``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Name
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    cron: str | None = None
    timezone: str | None = None
    dry_run: StrictBool = False
    priority: Priority = 0
    # Every run of the backfill takes this version of the definition (default: each run the current
    # one when it starts).
    version: VersionNumber | None = None


def check_overlap(overlap: str | None, federation: bool = False) -> Overlap:
    """The overlap policy to apply (``skip`` when not given); 400 for one this version cannot do
    (at all, or federation-wide)."""
    policy = overlap or "skip"
    if policy not in SUPPORTED_OVERLAP:
        raise BadRequest(
            f"overlap {policy!r} is not yet supported (only 'skip', 'replace', 'queue' and 'allow')",
            code="not_supported",
        )
    if federation and policy not in FEDERATION_OVERLAP:
        raise BadRequest(
            f"overlap {policy!r} applies to instance schedules and triggers only: a federation-wide "
            "one's previous run may be on another instance (use 'skip' or 'allow')",
            code="not_supported",
        )
    return cast(Overlap, policy)


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str


class RunNow(_Action):
    """Run the pipeline now (or queue it): the run's record at its end, or 202 at once (``wait``)."""

    kind: Literal["now"] = "now"
    wait: bool = True
    overlap: Overlap = "skip"
    priority: int = 0
    version: int | None = None


class ScheduleRun(_Action):
    """Schedule the pipeline with a cron, on this instance or federation-wide (``scope``). ``cron``
    and ``timezone`` are as sent: the scheduler reads them (400 ``invalid_cron``/``invalid_timezone``)."""

    kind: Literal["schedule"] = "schedule"
    cron: Any
    timezone: Any = "UTC"
    scope: Scope = "instance"
    placement: Any = None  # federation-wide only (``book.check_placement``)
    add: bool = False  # another schedule instead of replacing the pipeline's (instance scope)
    overlap: Overlap = "skip"
    catchup: Catchup | None = None
    catchup_window: int | None = None
    priority: int = 0


class ArmTrigger(_Action):
    """Run the pipeline at each ground-truth advance of ``dataset`` (a data trigger)."""

    kind: Literal["trigger"] = "trigger"
    dataset: str
    scope: Scope = "instance"
    placement: Any = None
    overlap: Overlap = "skip"
    priority: int = 0


RunAction = Annotated[RunNow | ScheduleRun | ArmTrigger, Field(discriminator="kind")]


def action_of(request: RunRequest) -> RunNow | ScheduleRun | ArmTrigger:
    """What a ``POST /pipeline/run`` body asks for; a 400 with the API's code for a combination of
    fields it does not allow (checked in this order: name, version, scope, placement, trigger, cron)."""
    name = request.name
    if problem := name_problem(name, "pipeline name"):
        raise BadRequest(problem, code="invalid_name")
    scheduled = request.cron not in (None, "")
    if request.version is not None and (request.trigger is not None or scheduled):
        raise BadRequest(
            "version applies to a run now only: a schedule or a data trigger runs the pipeline as it is "
            "at each tick (initialise that version's definition again to make it the current one)",
            code="not_supported",
        )
    scope = request.scope or "instance"
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}", code="invalid_scope")
    if request.placement is not None and scope != "federation":
        raise BadRequest('placement only applies to scope "federation"', code="invalid_placement")
    federation = scope == "federation"
    priority = request.priority or 0
    if request.trigger is not None:
        if scheduled:
            raise BadRequest("give either cron or trigger, not both", code="invalid_request")
        return ArmTrigger(
            name=name,
            dataset=request.trigger.dataset,
            scope=scope,
            placement=request.placement,
            overlap=check_overlap(request.overlap, federation=federation),
            priority=priority,
        )
    if federation and not scheduled:
        raise BadRequest("a federation-wide schedule needs a cron expression", code="invalid_cron")
    if scheduled:
        return ScheduleRun(
            name=name,
            cron=request.cron,
            timezone=request.timezone or "UTC",
            scope=scope,
            placement=request.placement,
            add=request.add,
            overlap=check_overlap(request.overlap, federation=federation),
            catchup=request.catchup,
            catchup_window=request.catchup_window,
            priority=priority,
        )
    return RunNow(
        name=name,
        wait=request.wait,
        overlap=check_overlap(request.overlap),
        priority=priority,
        version=request.version,
    )

