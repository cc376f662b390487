"""Federation-wide schedules and the record of their ticks, in etcd.

``/mao/v1/schedules/<id>`` holds ``{id, pipeline, cron, timezone, placement, created_by, created_at}``.
``/mao/v1/ticks/<id>/<due>`` holds what happened at one tick (``due`` is ``YYYY-MM-DDTHH:MM:SSZ``, so
keys sort by time): ``{due_at, outcome, instance, run_id, reason, recorded_at}`` with ``outcome`` one
of ``claimed`` (an instance won the tick and is starting the run), ``fired``, ``skipped`` or
``missed`` (the whole federation was down and the catch-up policy did not run it, ``catchup``).
``/mao/v1/catchups/<id>`` holds the newest catch-up decision (``{until, instance, ...}``).

Contracts:
- ``claim`` is a compare-and-create: exactly one caller gets True for a given tick, whichever
  instances race for it. That is what makes a tick run at most once federation-wide.
- Tick keys ride on a lease of ``TICK_HISTORY_TTL`` (7 days) that each instance shares between the
  ticks it records for an hour (``SharedLease``), so the history cleans itself and costs one lease
  per instance-hour. A lease etcd lost (restored from a backup, revoked) is replaced at the first
  write that fails on it, which is then made again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import BadRequest, Conflict, NotFound
from ..federation import keys, records
from ..federation.answers import KeyValue
from ..federation.etcd import Etcd
from ..federation.leases import SharedLease
from ..federation.records import Placement, ScheduleRecord, TickRecord
from ..federation.registry import Registry
from ..federation.seals import Proof, Sealer

TICK_HISTORY_TTL = 7 * 86400
LEASE_REUSE = 3600.0
MAX_PLACEMENT_LABELS = 32


def due_key(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_due(key: str) -> datetime:
    return datetime.strptime(keys.last_segment(key), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def check_placement(placement: object) -> dict[str, Any]:
    """``{"labels": {key: value}}`` (or nothing); a 400 naming the problem otherwise."""
    if placement in (None, {}):
        return {"labels": {}}
    if not isinstance(placement, dict) or set(placement) - {"labels"}:
        raise BadRequest(
            'placement must be an object like {"labels": {"role": "central"}}', code="invalid_placement"
        )
    labels = placement.get("labels") or {}
    if not isinstance(labels, dict) or len(labels) > MAX_PLACEMENT_LABELS:
        raise BadRequest(
            f"placement.labels must be an object of at most {MAX_PLACEMENT_LABELS} key: value pairs",
            code="invalid_placement",
        )
    for key, value in labels.items():
        if not key.strip() or not isinstance(value, str) or "," in key + value or "=" in key:
            raise BadRequest(
                f"placement label {key!r}: keys and values are strings without ',' (and keys without '=')",
                code="invalid_placement",
            )
    return {"labels": {k.strip(): v.strip() for k, v in labels.items()}}


async def require_registered(registry: Registry, pipeline: str) -> None:
    """404 unless ``pipeline`` is registered in the federation: a federation-wide schedule or data
    trigger of it could fire nowhere."""
    if await registry.pipeline(pipeline) is None:
        raise NotFound(
            f"pipeline {pipeline!r} is not registered in the federation: initialise it on at least "
            "one instance first (POST /pipeline/init)"
        )


def labels_match(labels: Mapping[str, str], placement: Placement | None) -> bool:
    """Whether an instance with ``labels`` has every label the placement asks for."""
    wanted = placement.labels if placement is not None else {}
    return all(labels.get(key) == value for key, value in wanted.items())


class ScheduleBook:
    def __init__(self, etcd: Etcd, sealer: Sealer | None = None) -> None:
        self.etcd = etcd
        self.sealer = sealer or Sealer("unnamed", None)
        self.history_lease = SharedLease(etcd, TICK_HISTORY_TTL, reuse_for=LEASE_REUSE)

    # -- schedules ------------------------------------------------------------------------------
    async def create(self, schedule: dict[str, Any]) -> None:
        """Store a new schedule or data trigger, sealed by this instance (its ``created_by``)."""
        sealed = self.sealer.seal(schedule) if self.sealer.proof is Proof.SIGNATURE else schedule
        if not await self.etcd.create(keys.schedule(schedule["id"]), sealed):
            raise Conflict(f"federation schedule {schedule['id']} already exists")

    def check(self, key: str, revision: int, value: Any) -> ScheduleRecord | None:
        """The schedule (or trigger) record under ``key``, if it is one this instance may act on: it
        fits ``records.ScheduleRecord`` (numbers in range, names valid) and was written by the instance
        it names as ``created_by``: over TLS, sealed by that instance's certificate, so that a record a
        member wrote past the API in another's name, or a non-member's, never fires. Without TLS
        that name is a claim (docs/security.md). None (said once) otherwise."""
        record = records.parse(ScheduleRecord, key, revision, value)
        if record is None:
            return None
        if key != keys.schedule(record.id):
            records.refuse(key, revision, f"a schedule record whose id {record.id} is not its key's")
            return None
        if self.sealer.proof is Proof.SIGNATURE or "signed_by" in value:
            seal = self.sealer.check(value, signer=record.created_by)
            if isinstance(seal, str):
                records.refuse(key, revision, f"a schedule not written by {record.created_by}: {seal}")
                return None
        return record

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        kv = await self.etcd.get(keys.schedule(schedule_id))
        if kv is None or kv.problem:
            return None
        return self.check(kv.key, kv.mod_revision, kv.value)

    async def all(self) -> list[ScheduleRecord]:
        """Every schedule this instance may act on (``check``)."""
        found = []
        for kv in await self.etcd.list_prefix(keys.SCHEDULES):
            if (schedule := self.check(kv.key, kv.mod_revision, kv.value)) is not None:
                found.append(schedule)
        return found

    async def delete(self, schedule_id: str) -> bool:
        """Delete the schedule (or data trigger) and its tick history."""
        deleted = await self.etcd.delete(keys.schedule(schedule_id))
        await self.etcd.delete_prefix(keys.ticks(schedule_id))
        await self.etcd.delete_prefix(keys.trigger_fires(schedule_id))
        await self.etcd.delete(keys.catchup(schedule_id))
        return deleted

    # -- ticks ----------------------------------------------------------------------------------
    async def claim(self, schedule_id: str, due: datetime, record: dict[str, Any]) -> bool:
        """Create the tick's record unless another instance did first; True when ours."""
        key, value = keys.tick(schedule_id, due_key(due)), _tick(due, record)
        return await self.history_lease.with_lease(lambda lease: self.etcd.create(key, value, lease=lease))

    async def record(self, schedule_id: str, due: datetime, record: dict[str, Any]) -> None:
        """Overwrite the record of a tick we claimed (its outcome, then the run's end)."""
        key, value = keys.tick(schedule_id, due_key(due)), _tick(due, record)
        await self.history_lease.with_lease(lambda lease: self.etcd.put(key, value, lease=lease))

    async def tick(self, schedule_id: str, due: datetime) -> dict[str, Any] | None:
        kv = await self.etcd.get(keys.tick(schedule_id, due_key(due)))
        return _value(kv) if kv is not None else None

    async def recent_ticks(self, schedule_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` tick records, newest first (records that do not fit left out)."""
        kvs = await self.etcd.list_prefix(keys.ticks(schedule_id), limit=limit, newest_first=True)
        return [tick for kv in kvs if (tick := _value(kv)) is not None]

    async def recent_fires(self, trigger_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """A data trigger's newest ``limit`` fire records (one per ground-truth advance), newest first."""
        kvs = await self.etcd.list_prefix(keys.trigger_fires(trigger_id), limit=limit, newest_first=True)
        return [
            {**tick.model_dump(), **_fire_fields(kv.value)}
            for kv in kvs
            if (tick := records.parse(TickRecord, kv.key, kv.mod_revision, kv.value)) is not None
        ]

    async def last_tick_before(self, schedule_id: str, due: datetime) -> datetime | None:
        kvs = await self.etcd.list_prefix(
            keys.ticks(schedule_id),
            limit=1,
            newest_first=True,
            before=keys.tick(schedule_id, due_key(due)),
        )
        return _due_of(kvs[0].key) if kvs else None


def _tick(due: datetime, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "due_at": due.astimezone(UTC).isoformat(),
        "outcome": record.get("outcome"),
        "instance": record.get("instance"),
        "run_id": record.get("run_id"),
        # Bounded as every reader bounds it (records.TickRecord): a long error stays readable.
        "reason": str(record["reason"])[:2000] if record.get("reason") else None,
        "recorded_at": datetime.now(UTC).isoformat(),
        **{k: v for k, v in record.items() if k in ("run_status", "recorded_by")},
    }


def _value(kv: KeyValue) -> dict[str, Any] | None:
    """A tick record as the scheduler reads it; None (said once) when its key or value does not fit."""
    due = _due_of(kv.key)
    tick = records.parse(TickRecord, kv.key, kv.mod_revision, kv.value)
    if due is None or tick is None:
        if due is None:
            records.refuse(kv.key, kv.mod_revision, "not a tick's key (YYYY-MM-DDTHH:MM:SSZ)")
        return None
    return {**tick.model_dump(exclude_unset=True), "due_at": due.isoformat()}


def _due_of(key: str) -> datetime | None:
    try:
        return parse_due(key)
    except ValueError:
        return None


def _fire_fields(value: Any) -> dict[str, Any]:
    """What a data trigger's fire record adds to a tick's fields: the advance it stands for."""
    fields = {k: value.get(k) for k in ("dataset", "commit")} if isinstance(value, dict) else {}
    return {k: v for k, v in fields.items() if isinstance(v, str) and len(v) <= 128}


_TICK_FIELDS = ("due_at", "outcome", "instance", "run_id", "reason", "run_status", "recorded_at")


def listed(
    schedule: ScheduleRecord, next_run_time: str | None, recent: list[dict[str, Any]]
) -> dict[str, Any]:
    """A federation-wide schedule as ``GET /federation/schedules`` lists it, with its next run time
    here and its recent ticks (a data trigger's: its fires, one per ground-truth advance, with the
    commit)."""
    s = schedule.model_dump()
    trigger = s.get("trigger")
    return {
        **{k: s.get(k) for k in ("id", "pipeline", "cron", "timezone", "placement")},
        "overlap": s.get("overlap") or "skip",
        "priority": s.get("priority") or 0,
        **({} if trigger else {k: s.get(k) for k in ("catchup", "catchup_window")}),
        **({"trigger": trigger} if trigger else {}),
        "created_by": s.get("created_by"),
        "created_at": s.get("created_at"),
        "next_run_time": next_run_time,
        "ticks": recent if trigger else [{k: t.get(k) for k in _TICK_FIELDS} for t in recent],
    }
