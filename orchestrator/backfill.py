"""Backfill: the runs of a pipeline for the ticks of a past (or future) span, in order, one at a time.

``POST /pipeline/backfill {name, from, to, cron?, timezone?, dry_run?}``. The cron defaults to the
pipeline's schedule (its one local cron schedule, or its one federation-wide one); none or several is
a 400 asking for ``cron``. Ticks are those of ``fire_times`` (the daylight-saving rule included), at
most ``MAX_TICKS``. Each run has trigger ``backfill`` and ``tick_at`` the tick it stands for. A run
waits for the pipeline's previous run (whatever started it) to end: one run of a pipeline at a time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import BadRequest, Conflict, MaoError, NotFound
from .run_requests import BackfillRequest
from .tasks import spawn
from .ticks import fire_times, make_trigger

if TYPE_CHECKING:
    from .pipelines.runner import Runner
    from .store import Store

log = logging.getLogger(__name__)

MAX_TICKS = 1000
IDLE_POLL = 0.2


class Backfills:
    def __init__(
        self,
        store: Store,
        runner: Runner,
        federation_schedules: Callable[[], Awaitable[list[dict[str, Any]]]],
    ) -> None:
        self.store = store
        self.runner = runner
        self.federation_schedules = federation_schedules
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def start(self, request: BackfillRequest) -> dict[str, Any]:
        """The ticks (``dry_run``), or the ticks with the backfill started in the background."""
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
        backfill_id = uuid.uuid4().hex
        spawn(self._run(backfill_id, request.name, ticks), f"backfill {backfill_id}", self._tasks)
        log.info("backfill %s of %s started: %d tick(s) of %r", backfill_id, request.name, len(ticks), cron)
        return {**result, "backfill_id": backfill_id, "status": "started"}

    async def _cron(self, request: BackfillRequest) -> tuple[str, str]:
        if request.cron:
            return request.cron, request.timezone or "UTC"
        local = [
            s
            for s in await self.store.list_schedules()
            if s["pipeline"] == request.name and not s.get("trigger")
        ]
        try:
            federation = [
                s
                for s in await self.federation_schedules()
                if s.get("pipeline") == request.name and s.get("cron")
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
        schedule = schedules[0]
        return schedule["cron"], request.timezone or schedule.get("timezone") or "UTC"

    async def _run(self, backfill_id: str, pipeline: str, ticks: list[datetime]) -> None:
        for number, tick in enumerate(ticks, start=1):
            run_id = await self._start_when_idle(pipeline, tick)
            if run_id is None:
                log.warning(
                    "backfill %s of %s stopped at tick %d of %d", backfill_id, pipeline, number, len(ticks)
                )
                return
            log.info(
                "backfill %s: tick %s of %s is run %s (%d of %d)",
                backfill_id,
                tick.isoformat(),
                pipeline,
                run_id,
                number,
                len(ticks),
            )
            while self.runner.active_run(pipeline) == run_id:
                await asyncio.sleep(IDLE_POLL)
        log.info("backfill %s of %s done: %d run(s)", backfill_id, pipeline, len(ticks))

    async def _start_when_idle(self, pipeline: str, tick: datetime) -> str | None:
        while True:
            while self.runner.active_run(pipeline) is not None:
                await asyncio.sleep(IDLE_POLL)
            try:
                return await self.runner.start(pipeline, trigger="backfill", tick_at=tick)
            except Conflict:
                continue  # another trigger started a run in between: wait for it too
            except MaoError as exc:
                log.warning(
                    "backfill of %s: the run of tick %s could not start: %s",
                    pipeline,
                    tick.isoformat(),
                    exc.message,
                )
                return None


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None:
        raise BadRequest(
            f"'{what}' needs a time zone offset (e.g. 2026-03-01T00:00:00Z)", code="invalid_request"
        )
    return moment.astimezone(UTC)
