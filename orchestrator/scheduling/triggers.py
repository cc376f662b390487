"""Data triggers: run a pipeline each time a dataset's ground-truth advances, on any instance.

``POST /pipeline/run {name, trigger: {dataset}}``. Every merge into ground-truth puts
``/mao/v1/ground-truth/<dataset>`` (``merging.advances``); each instance watches that prefix and,
for each PUT (one advance, told apart by its etcd revision):
- a local trigger (a row of the schedules table with ``dataset`` set) starts a run here, with trigger
  ``dataset``, ``trigger_dataset`` and ``trigger_commit`` (the ground-truth commit that caused it) on
  its record, or records the advance as skipped (overlap ``skip``: the previous run still going);
- a federation-wide trigger (``scope: "federation"``, a record under ``/mao/v1/schedules/`` with a
  ``trigger``) is fired by exactly one eligible instance: each eligible one races to create
  ``/mao/v1/trigger-fires/<id>/<revision>`` (compare-and-create, as the cron ticks), the winner fires
  and writes the outcome into that key.

Advances while the watch was down (etcd away) are not replayed one by one: the list that follows a
broken watch is the current state, not the history. What is missed is an advance, never a run twice.
A trigger that would close a cycle (a dataset the pipeline itself writes, or a chain of triggers
leading back to it: ``trigger_cycles``) is a 400 ``trigger_loop`` naming the chain.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from executor.wire.names import name_problem

from ..domain.causes import DataTrigger, Overlap, Refused, RunAsk, Skipped
from ..domain.schedule import Schedule, ScheduleOptions
from ..domain.states import TickOutcome
from ..errors import BadRequest, Conflict, MaoError, NotFound
from ..federation import keys
from ..federation.answers import KeyValue, WatchEvent
from ..federation.etcd import Etcd
from ..federation.leases import SharedLease
from ..federation.records import Advance, ScheduleRecord
from ..federation.records import parse as parse_record
from ..federation.watch import PrefixWatch
from ..tasks import cancel_all, spawn
from .book import ScheduleBook, check_placement, labels_match, require_registered
from .trigger_cycles import ArmedTrigger, describe, find_cycle

if TYPE_CHECKING:
    from ..config import Settings
    from ..datasets import Datasets
    from ..federation.registry import Registry
    from ..merging.pins import Pins
    from ..runs.door import Door
    from ..store import Store
    from .requests import ArmTrigger

log = logging.getLogger(__name__)

FIRE_HISTORY_TTL = 7 * 86400
RESYNC_EVERY = 30.0


class DataTriggers:
    def __init__(
        self,
        settings: Settings,
        etcd: Etcd,
        store: Store,
        door: Door,
        registry: Registry,
        datasets: Datasets | None = None,
        pins: Pins | None = None,
    ) -> None:
        self.instance = settings.instance_name
        self.labels = settings.labels
        self.etcd = etcd
        self.store = store
        self.door = door
        self.registry = registry
        self.datasets = datasets
        self.pins = pins
        self.book = ScheduleBook(etcd, registry.sealer)
        self._verified: dict[tuple[str, str, str], str | None] = {}  # (dataset, commit, master) -> why not
        self.history_lease = SharedLease(etcd, FIRE_HISTORY_TTL, reuse_for=3600.0)
        self._federation: dict[str, ScheduleRecord] = {}  # id -> federation-wide trigger record
        self._seen: dict[str, int] = {}  # dataset -> last advance (etcd revision) handled
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        spawn(self._watch_triggers(), "federation data triggers watch", self._tasks)
        spawn(self._watch_advances(), "ground-truth advances watch", self._tasks)

    async def close(self) -> None:
        await cancel_all(self._tasks)

    # -- the API's side -------------------------------------------------------------------------
    async def add(
        self,
        pipeline: str,
        dataset: str,
        scope: str,
        placement: object,
        overlap: Overlap = "skip",
        priority: int = 0,
    ) -> str:
        """Arm a data trigger (on this instance, or federation-wide by ``scope``); its id."""
        if await self.registry.dataset(dataset) is None:
            raise NotFound(f"dataset {dataset!r} is not registered in the federation")
        if scope == "federation":
            await require_registered(self.registry, pipeline)
            await self._refuse_cycle(pipeline, dataset)
            trigger_id = uuid.uuid4().hex
            record: dict[str, Any] = {
                "id": trigger_id,
                "pipeline": pipeline,
                "cron": "",
                "timezone": "UTC",
                "trigger": {"dataset": dataset},
                "overlap": overlap,
                "priority": priority,
                "placement": check_placement(placement),
                "created_by": self.instance,
                "created_at": datetime.now(UTC).isoformat(),
            }
            await self.book.create(record)  # sealed: only what this instance wrote fires as its own
            if self.pins is not None and await self.store.get_pipeline(pipeline) is not None:
                # Its advances are checked on the master accepted now (the others: by their pins).
                await self.pins.ensure(pipeline, "dataset", dataset)
            # As every instance reads it back (one that does not fit fires nowhere).
            if (armed := parse_record(ScheduleRecord, keys.schedule(trigger_id), 0, record)) is not None:
                self._federation[trigger_id] = armed
            log.info(
                "federation-wide data trigger %s: %s runs when %s advances", trigger_id, pipeline, dataset
            )
            return trigger_id
        local = await self.store.get_pipeline(pipeline)
        if local is None:
            raise NotFound(f"pipeline {pipeline!r} is not initialised on this instance (POST /pipeline/init)")
        await self._refuse_cycle(pipeline, dataset)
        if self.pins is not None:  # its advances are checked on the master accepted now
            await self.pins.ensure(pipeline, "dataset", dataset)
        row = await self.store.add_schedule(
            uuid.uuid4().hex,
            pipeline,
            "",
            "UTC",
            ScheduleOptions(overlap=overlap, priority=priority),
            dataset=dataset,
        )
        log.info("data trigger %s: %s runs when %s advances", row.id, pipeline, dataset)
        return row.id

    async def arm(self, ask: ArmTrigger) -> str:
        """``POST /pipeline/run`` with a ``trigger``: ``add`` with the ask's scope and policies."""
        return await self.add(
            ask.name, ask.dataset, ask.scope, ask.placement, overlap=ask.overlap, priority=ask.priority
        )

    async def _refuse_cycle(self, pipeline: str, dataset: str) -> None:
        """400 ``trigger_loop`` naming the chain when ``dataset -> pipeline`` would close a cycle with
        the triggers armed here and federation-wide (read afresh; the watched copy when etcd is away)."""
        armed = [
            ArmedTrigger(row.pipeline, row.dataset)
            for row in await self.store.data_triggers()
            if row.dataset is not None
        ]
        records: list[ScheduleRecord]
        try:
            values = await self.etcd.list_prefix(keys.SCHEDULES)
            found = (self.book.check(kv.key, kv.mod_revision, kv.value) for kv in values)
            records = [trigger for trigger in found if trigger is not None]
        except MaoError:
            records = list(self._federation.values())
        armed += [
            ArmedTrigger(record.pipeline, record.trigger.dataset)
            for record in records
            if record.trigger is not None
        ]
        written: dict[str, set[str]] = {}

        async def outputs(name: str) -> set[str]:
            # What a run of it may write: this instance's definition and the federation's registration.
            if name not in written:
                found: set[str] = set()
                local = await self.store.get_pipeline(name)
                if local is not None:
                    found |= {step.output_dataset for step in local.steps}
                try:
                    registration = await self.registry.pipeline(name)
                except MaoError:
                    registration = None
                for step in (registration or {}).get("steps") or []:
                    if isinstance(step, dict) and isinstance(step.get("output_dataset"), str):
                        found.add(step["output_dataset"])
                written[name] = found
            return written[name]

        chain = await find_cycle(ArmedTrigger(pipeline, dataset), armed, outputs)
        if chain is not None:
            raise BadRequest(describe(chain), code="trigger_loop", cycle=chain)

    async def jobs(self) -> dict[str, str | None]:
        """The data triggers for ``GET /jobs``: they have no next run time."""
        local = [s.id for s in await self.store.data_triggers()]
        return {job_id: None for job_id in [*local, *self._federation]}

    # -- watches --------------------------------------------------------------------------------
    async def _watch_triggers(self) -> None:
        async def on_list(values: list[KeyValue], _revision: int) -> None:
            found = (self.book.check(kv.key, kv.mod_revision, kv.value) for kv in values)
            self._federation = {t.id: t for t in found if t is not None and t.trigger is not None}

        async def on_event(event: WatchEvent) -> None:
            trigger_id = keys.last_segment(event.key)
            record = self.book.check(event.key, event.revision, event.value) if event.kind == "PUT" else None
            if record is not None and record.trigger is not None:
                self._federation[trigger_id] = record
            else:  # deleted, or no longer a trigger this instance may act on
                self._federation.pop(trigger_id, None)

        await PrefixWatch(
            self.etcd,
            keys.SCHEDULES,
            on_list=on_list,
            on_event=on_event,
            what="federation data triggers",
            resync_every=RESYNC_EVERY,
            relist=True,
        ).run()

    async def _watch_advances(self) -> None:
        async def on_list(values: list[KeyValue], _revision: int) -> None:
            for kv in values:  # the current state: what happened before is not replayed
                self._seen[keys.last_segment(kv.key)] = max(
                    self._seen.get(keys.last_segment(kv.key), 0), kv.mod_revision
                )

        async def on_event(event: WatchEvent) -> None:
            if event.kind != "PUT":
                return
            advance = parse_record(Advance, event.key, event.revision, event.value)
            dataset = keys.last_segment(event.key)
            if advance is None or event.key != keys.ground_truth(dataset) or name_problem(dataset):
                return
            if event.revision <= self._seen.get(dataset, 0):
                return  # handed over again after a resumed watch
            self._seen[dataset] = event.revision
            await self._advanced(dataset, advance.commit, event.revision)

        await PrefixWatch(
            self.etcd, keys.GROUND_TRUTH, on_list=on_list, on_event=on_event, what="ground-truth advances"
        ).run()

    # -- one advance ----------------------------------------------------------------------------
    async def _advanced(self, dataset: str, commit: str, revision: int) -> None:
        now = datetime.now(UTC)
        for row in await self.store.data_triggers(dataset):
            if await self._really_advanced(dataset, commit, row.pipeline):
                await self._fire_local(row, dataset, commit, now)
        for record in list(self._federation.values()):
            if record.trigger is not None and record.trigger.dataset == dataset:
                spawn(self._compete(record, dataset, commit, revision), f"trigger {record.id}", self._tasks)

    async def _really_advanced(self, dataset: str, commit: str, pipeline: str) -> bool:
        """Whether ``dataset``'s ground-truth really is at ``commit`` (or past it) on the master this
        instance accepted: anyone can put an advance record, only a merge moves ground-truth. Checked
        once per advance (a fetch); an advance that cannot be checked fires nothing, said once."""
        if self.datasets is None or self.pins is None:
            return True  # no git here (unit tests of the scheduling alone)
        master = await self.pins.master(dataset, scope=pipeline)
        if master is None:
            why: str | None = f"this instance has not accepted a master for {dataset} (no pipeline here uses it)"
        else:
            marker = (dataset, commit, master)
            if marker not in self._verified:
                self._verified[marker] = await self._check_on_master(dataset, commit, master)
                if len(self._verified) > 1000:
                    self._verified.pop(next(iter(self._verified)))
            why = self._verified[marker]
        if why is not None:
            log.warning(
                "ground-truth of %s advanced to %s, it was announced, but no trigger fires: %s",
                dataset,
                commit[:12],
                why,
            )
        return why is None

    async def _check_on_master(self, dataset: str, commit: str, master: str) -> str | None:
        assert self.datasets is not None

        def reached(repo: Any) -> bool:
            repo.sync()
            return bool(repo.ground_truth_reached(commit))

        try:
            if await self.datasets.run(dataset, master, reached):
                return None
        except MaoError as exc:
            return f"its master could not be read ({exc.message})"
        return "the master's ground-truth is not there (an advance nobody merged)"

    async def _fire_local(self, row: Schedule, dataset: str, commit: str, now: datetime) -> None:
        pipeline, trigger_id = row.pipeline, row.id
        trigger = DataTrigger(trigger_id, dataset, commit)
        outcome, run_id, reason = await self._start(
            RunAsk(pipeline, trigger, overlap=row.overlap, priority=row.priority)
        )
        try:
            await self.store.record_tick(
                trigger_id, pipeline, now, outcome, run_id=run_id, reason=reason or trigger.advance
            )
        except MaoError as exc:
            log.warning(
                "data trigger %s: the outcome (%s) could not be recorded: %s",
                trigger_id,
                outcome,
                exc.message,
            )

    async def _start(self, ask: RunAsk) -> tuple[TickOutcome, str | None, str | None]:
        """Ask the door: ``(outcome, run id, reason)``, ``fired`` with the run (and, when it did not
        simply start, how), or ``skipped`` and why."""
        trigger = ask.cause
        assert isinstance(trigger, DataTrigger)
        decision = await self.door.request_run(ask)
        if isinstance(decision, Skipped):
            reason = f"{trigger.advance}; {decision.reason}"
            log.info("data trigger %s of %s skipped: %s", trigger.trigger_id, ask.pipeline, reason)
            return TickOutcome.SKIPPED, decision.in_the_way, reason
        if isinstance(decision, Refused):
            if not isinstance(decision.error, Conflict):
                log.warning(
                    "data trigger %s of %s could not start a run: %s",
                    trigger.trigger_id,
                    ask.pipeline,
                    decision.error.message,
                )
            return TickOutcome.SKIPPED, None, f"{trigger.advance}; {decision.error.message}"
        log.info(
            "data trigger %s: %s advanced to %s, run %s of %s started",
            trigger.trigger_id,
            trigger.dataset,
            trigger.commit[:12],
            decision.run_id,
            ask.pipeline,
        )
        if decision.note:
            return TickOutcome.FIRED, decision.run_id, f"{trigger.advance}; {decision.note}"
        return TickOutcome.FIRED, decision.run_id, None

    async def _compete(self, record: ScheduleRecord, dataset: str, commit: str, revision: int) -> None:
        """Federation-wide: the eligible instance that creates the advance's key fires it."""
        trigger_id, pipeline = record.id, record.pipeline
        if not labels_match(self.labels, record.placement):
            return
        if await self.store.get_pipeline(pipeline) is None:
            return
        if not await self._really_advanced(dataset, commit, pipeline):
            return
        key = keys.trigger_fire(trigger_id, revision)
        claim = {
            "outcome": TickOutcome.CLAIMED,
            "instance": self.instance,
            "dataset": dataset,
            "commit": commit,
        }
        if not await self.history_lease.with_lease(lambda lease: self.etcd.create(key, claim, lease=lease)):
            return  # another instance fires this advance
        trigger = DataTrigger(trigger_id, dataset, commit, federation=True)
        outcome, run_id, reason = await self._start(
            RunAsk(pipeline, trigger, overlap=record.overlap or "skip", priority=record.priority or 0)
        )
        result = {
            **claim,
            "outcome": outcome,
            "run_id": run_id,
            "reason": reason,
            "recorded_at": datetime.now(UTC).isoformat(),
        }
        await self.history_lease.with_lease(lambda lease: self.etcd.put(key, result, lease=lease))


