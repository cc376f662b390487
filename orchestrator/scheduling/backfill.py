"""Backfill: the runs of a pipeline for the ticks of a past (or future) span, in order, one at a time.

``POST /pipeline/backfill {name, from, to, cron?, timezone?, dry_run?, priority?, version?}``. The cron defaults to the
pipeline's schedule (its one local cron schedule, or its one federation-wide one); none or several is
a 400 asking for ``cron``. Ticks are those of ``fire_times`` (the daylight-saving rule included), at
most ``MAX_TICKS``. Each run has trigger ``backfill`` and ``tick_at`` the tick it stands for.

The runs are asked of the door (``runs/door.py``, cause ``Backfill``) and go through the durable queue
(``runs/admission.py``): all of them are recorded ``queued`` with the backfill in one transaction before
the answer, in tick order, and admission starts them one at a time (one run of
a pipeline at a time), each once the pipeline's previous run (whatever started it) has ended. A
restart continues the backfill where it was: its queued runs are rows, re-admitted at start. A
queued tick is cancelled like any queued run (``POST /runs/{id}/cancel``).

A backfill is an object of its own (``GET /backfills``, ``GET /backfills/{id}``): a row written in
the same transaction as its runs, which name it (``runs.backfill_id``); its progress is counted from
their states. ``POST /backfills/{id}/cancel`` ends its queued runs ``cancelled`` in one transaction
(and stops its running run with ``{"running": true}``); being rows, the cancel holds across a restart.
With ``version`` every run takes that version of the pipeline; without, each the pipeline as it is
when the run starts (as any queued run).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ..domain.causes import Backfill, Queued, Refused, RunAsk
from ..domain.states import BackfillStatus, RunStatus
from ..errors import BadRequest, Conflict, MaoError, NotFound
from ..federation.records import ScheduleRecord
from ..store.backfills import BackfillRecords, BackfillView
from .requests import BackfillRequest
from .ticks import fire_times, make_trigger

if TYPE_CHECKING:
    from ..runs.door import Door
    from ..store import Store

log = logging.getLogger(__name__)

MAX_TICKS = 1000
# The span a backfill may cover. Python's calendar ends at years 1 and 9999, and the walk of a cron
# through time zones steps hours beyond the span's ends: the first and the last year are left out, so
# that no instant of a backfill, nor any step of its walk, runs off the calendar.
EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class Cancels(Protocol):
    """What a backfill needs of the run engine (``runs.engine.Runner``) besides the door: cancelling."""

    async def cancel(self, run_id: str) -> None: ...

    async def cancel_queued_many(
        self, run_ids: Sequence[str], write: Callable[[list[str]], Awaitable[list[str]]]
    ) -> tuple[list[str], list[str]]: ...


class Backfills:
    def __init__(
        self,
        store: Store,
        door: Door,
        runner: Cancels,
        federation_schedules: Callable[[], Awaitable[list[ScheduleRecord]]],
    ) -> None:
        self.store = store
        self.door = door  # starts its runs
        self.runner = runner  # cancels them
        self.federation_schedules = federation_schedules
        self.records = BackfillRecords(store)

    async def close(self) -> None:
        """Nothing to stop: a backfill is queued runs, which outlive the process."""

    async def start(self, request: BackfillRequest, by: str | None = None) -> dict[str, Any]:
        """The ticks (``dry_run``), or the ticks with their runs queued (``runs``: their ids, in
        order) and the backfill recorded (``backfill_id``; ``by``: who asked)."""
        start, end = _aware(request.start, "from"), _aware(request.end, "to")
        if end < start:
            raise BadRequest("'to' must not be before 'from'", code="invalid_request")
        if await self.store.get_pipeline(request.name) is None:
            raise NotFound(
                f"pipeline {request.name!r} is not initialised on this instance (POST /pipeline/init)"
            )
        cron, timezone = await self._cron(request)
        ticks = fire_times(
            make_trigger(cron, timezone), start - timedelta(microseconds=1), end, MAX_TICKS + 1
        )
        if len(ticks) > MAX_TICKS:
            raise BadRequest(
                f"the span holds more than {MAX_TICKS} ticks of {cron!r}: backfill it in smaller parts",
                code="too_many_ticks",
            )
        result: dict[str, Any] = {
            "pipeline": request.name,
            "cron": cron,
            "timezone": timezone,
            "ticks": [t.isoformat() for t in ticks],
            "count": len(ticks),
            "dry_run": request.dry_run,
        }
        if request.dry_run or not ticks:
            return result
        backfill = Backfill(uuid.uuid4().hex, cron, timezone, start, end, tuple(ticks), by)
        ask = RunAsk(request.name, backfill, priority=request.priority, version=request.version)
        match await self.door.request_run(ask):
            case Queued(run_ids=queued):
                run_ids = list(queued)
            case Refused(error=error):  # no such version, the database away: the API answers it
                raise error
            case decision:  # the door queues a backfill's runs, never starts or skips them
                raise TypeError(f"the door answered a backfill with {decision!r}")
        log.info(
            "backfill %s of %s queued: %d tick(s) of %r%s",
            backfill.id, request.name, len(ticks), cron,
            f", version {request.version}" if request.version is not None else "",
        )  # fmt: skip
        return {
            **result,
            "backfill_id": backfill.id,
            "runs": run_ids,
            "status": BackfillStatus.QUEUED,
            "version": request.version,
        }

    async def list(
        self, pipeline: str | None = None, limit: int = 50, active: bool | None = None
    ) -> list[BackfillView]:
        return await self.records.recent(pipeline, limit, active)

    async def get(self, backfill_id: str) -> BackfillView:
        found = await self.records.get(backfill_id)
        if found is None:
            raise NotFound(f"no backfill {backfill_id!r} on this instance (GET /backfills lists them)")
        return found

    async def cancel(self, backfill_id: str, running: bool) -> dict[str, Any]:
        """End the backfill's queued runs ``cancelled`` (one transaction) and, with ``running``, stop
        its running run as ``POST /runs/{id}/cancel`` would. 409 when none of its runs is left to
        cancel."""
        await self.get(backfill_id)  # 404 first
        queued = await self.records.run_ids(backfill_id, (RunStatus.QUEUED,))
        going = await self.records.run_ids(backfill_id, (RunStatus.PENDING, RunStatus.RUNNING))
        if not queued and not (running and going):
            what = "no run queued" + (" or going" if running else "")
            raise Conflict(
                f"backfill {backfill_id} has {what}: there is nothing to cancel"
                + ("" if running or not going else ' (its running run stops with {"running": true})'),
                code="backfill_ended",
            )
        reason = f"cancelled on request with its backfill {backfill_id} while queued"

        async def write(ids: list[str]) -> list[str]:
            return await self.records.cancel(backfill_id, ids, running, reason)

        cancelled, starting = await self.runner.cancel_queued_many(queued, write)
        stopping: list[str] = []
        if running:
            for run_id in [*starting, *going]:
                try:
                    await self.runner.cancel(run_id)
                    stopping.append(run_id)
                except (Conflict, NotFound):  # it ended meanwhile
                    continue
        log.info(
            "backfill %s cancelled: %d queued run(s) cancelled, %d running stopped",
            backfill_id, len(cancelled), len(stopping),
        )  # fmt: skip
        return {**(await self.get(backfill_id)).to_json(), "cancelled_runs": cancelled, "stopping_runs": stopping}

    async def _cron(self, request: BackfillRequest) -> tuple[str, str]:
        if request.cron:
            return request.cron, request.timezone or "UTC"
        local = [
            (s.cron, s.timezone) for s in await self.store.list_schedules(request.name) if not s.is_trigger
        ]
        try:
            federation = [
                (s.cron, s.timezone)
                for s in await self.federation_schedules()
                if s.pipeline == request.name and s.cron
            ]
        except MaoError:  # etcd away: this instance's schedules decide alone
            federation = []
        schedules = local + federation
        if len(schedules) != 1:
            what = "no schedule" if not schedules else f"{len(schedules)} schedules"
            raise BadRequest(
                f"pipeline {request.name!r} has {what}: give the cron expression to backfill ('cron')",
                code="invalid_cron",
            )
        cron, timezone = schedules[0]
        return cron, request.timezone or timezone or "UTC"


def _aware(moment: datetime, what: str) -> datetime:
    """``moment`` in UTC; a 400 when it has no offset or lies outside [EARLIEST, LATEST)."""
    if moment.tzinfo is None:
        raise BadRequest(
            f"'{what}' needs a time zone offset (e.g. 2026-03-01T00:00:00Z)", code="invalid_request"
        )
    try:
        instant = moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: before the calendar's first instant
        instant = None
    if instant is None or not EARLIEST <= instant < LATEST:
        raise BadRequest(
            f"'{what}' must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()} (the first and "
            "the last year of the calendar are left out)",
            code="invalid_request",
        )
    return instant
