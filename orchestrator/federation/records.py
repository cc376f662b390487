"""What other members write into etcd, checked before this instance acts on it.

Every record a member writes for the others (its member record, a lock, a ground-truth advance, a
federation-wide schedule or data trigger, an audit and its answers) is parsed here into a typed value
with bounds (schema, sizes, numbers in range) before anything reads a field of it: a record that does
not fit is skipped with one warning naming its key (``values.warn_once``), never an internal error.
Whether its writer may write it is each caller's rule, stated where it is applied:

- a member record is on a lease, under its own name, sealed by that instance (``members``);
- a lock is on a lease no longer than the longest ``MAO_LOCK_TTL``, else it is no lock (``locks``);
- a ground-truth advance fires a data trigger only once the dataset's master shows ground-truth at
  that commit (``triggers``);
- a schedule or trigger is sealed by the instance it names as ``created_by`` (without TLS: that
  instance is a member, see ``scheduler``);
- an audit is sealed by its auditor, an answer by the instance in its key (``audit``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from executor.wire.names import check_name

from ..domain.causes import Overlap
from ..domain.schedule import Catchup
from ..domain.states import TickOutcome
from .values import shown_key, warn_once

M = TypeVar("M", bound=BaseModel)

Name = Annotated[str, AfterValidator(check_name)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Moment = Annotated[str, StringConstraints(max_length=64)]


def _zoned_time(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 time") from None
    if moment.utcoffset() is None:
        raise ValueError("a time without a time zone")
    return value


ZonedTime = Annotated[str, StringConstraints(max_length=64), AfterValidator(_zoned_time)]
Commit = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]
Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Priority = Annotated[int, Field(strict=True, ge=-1000, le=1000)]
MAX_LABELS = 64


class Record(BaseModel):
    """A record another member wrote: fields this version does not know are ignored (a newer
    version may write more), those it knows must fit."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _labels(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_LABELS or any(len(k) > 256 or len(v) > 256 for k, v in value.items()):
        raise ValueError(f"at most {MAX_LABELS} labels of at most 256 characters")
    return value


Labels = Annotated[dict[str, str], AfterValidator(_labels)]


class MemberRecord(Record):
    name: Name
    api_url: Annotated[str, StringConstraints(max_length=2000)]
    version: Annotated[str, StringConstraints(max_length=100)] = ""
    labels: Labels = Field(default_factory=dict)
    started_at: Moment | None = None


class LockHolder(Record):
    instance: Name
    purpose: Text = ""
    acquired_at: Moment | None = None


class Advance(Record):
    commit: Commit
    instance: Name | None = None
    pipeline: Name | None = None
    run: Annotated[str, StringConstraints(max_length=64)] | None = None
    merged_at: Moment | None = None


class Placement(Record):
    labels: Labels = Field(default_factory=dict)


class TriggerOn(Record):
    dataset: Name


class ScheduleRecord(Record):
    """A federation-wide schedule (``cron``) or data trigger (``trigger``): what the schedulers read
    (``scheduling.book.ScheduleBook.check``); None in a policy is "not written" (an older record)."""

    id: Hex32
    pipeline: Name
    cron: Annotated[str, StringConstraints(max_length=128)] = ""
    timezone: Annotated[str, StringConstraints(max_length=64)] = "UTC"
    placement: Placement = Field(default_factory=Placement)
    overlap: Overlap | None = None
    catchup: Catchup | None = None
    catchup_window: Annotated[int, Field(strict=True, ge=1, le=366 * 86400)] | None = None
    priority: Priority | None = None
    trigger: TriggerOn | None = None
    created_by: Name
    created_at: ZonedTime


class TickRecord(Record):
    outcome: TickOutcome | None = None
    instance: Name | None = None
    run_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    reason: Annotated[str, StringConstraints(max_length=4000)] | None = None
    run_status: Annotated[str, StringConstraints(max_length=32)] | None = None
    recorded_at: Moment | None = None
    recorded_by: Name | None = None


class Fetch(Record):
    commit: Commit
    path: Annotated[str, StringConstraints(max_length=4096)]


class AuditAnswer(Record):
    instance: Name
    branch: Name
    commit: Commit | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    size: Annotated[int, Field(strict=True, ge=0, le=2**53)] | None = None
    content: Annotated[str, StringConstraints(max_length=64 * 1024)] | None = None
    content_base64: Annotated[str, StringConstraints(max_length=88 * 1024)] | None = None
    fetch: Fetch | None = None
    missing: bool | None = None
    error: Annotated[str, StringConstraints(max_length=2000)] | None = None


def parse(model: type[M], key: str, revision: int, value: Any) -> M | None:
    """``value`` as ``model``, or None (said once per key and version) when it does not fit."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.error_count() else None
        where = ".".join(str(p) for p in first["loc"]) if first else ""
        detail = f"{where}: {first['msg']}" if first and where else (first["msg"] if first else "invalid")
        warn_once(key, revision, f"not a {_label(model)} this version can act on ({detail[:200]})")
        return None


def refuse(key: str, revision: int, why: str) -> None:
    """Say once that a record is not acted upon, and why (the writer may not write it)."""
    warn_once(key, revision, why)


def _label(model: type[BaseModel]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", model.__name__.removesuffix("Record")).lower()


__all__ = [
    "Advance",
    "AuditAnswer",
    "LockHolder",
    "MemberRecord",
    "ScheduleRecord",
    "TickRecord",
    "parse",
    "refuse",
    "shown_key",
]
