"""Request bodies of ``POST /pipeline/run`` and ``POST /pipeline/backfill``, and the policy words they carry.

Unknown fields are errors (a misspelt ``catchup`` must not silently become the default). Fields whose
problems have long had their own error code (``cron``, ``timezone``, ``scope``, ``placement``) are
checked by the services that own them, so their 400s keep those codes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool

from ..domain.causes import Overlap
from ..domain.pipeline import Name
from ..domain.queue import MAX_PRIORITY, MIN_PRIORITY
from ..errors import BadRequest

Catchup = Literal["none", "latest", "all"]
# What the door does (``overlap``, runs/door.py): ``replace`` cancels the running run(s), ``queue``
# waits for them, ``allow`` runs beside them (each run's steps in folders of their own).
SUPPORTED_OVERLAP = ("skip", "replace", "queue", "allow")
# A federation-wide schedule or trigger's previous run may be on another instance, which this one
# can neither cancel nor wait for: no ``replace`` or ``queue``; ``allow`` starts regardless of it.
FEDERATION_OVERLAP = ("skip", "allow")
MAX_CATCHUP_WINDOW = 366 * 86400


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


def options(request: RunRequest) -> dict[str, Any]:
    """The schedule options of a request, with their defaults."""
    return {
        "overlap": check_overlap(request.overlap),
        "catchup": request.catchup or "latest",
        "catchup_window": request.catchup_window,
        "priority": request.priority or 0,
    }
