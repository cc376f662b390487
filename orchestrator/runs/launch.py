"""Starting runs: a run is recorded and handed to admission (``runs/admission.py``), which starts it
at once or keeps it waiting ``queued`` until its turn; a run a previous process left unfinished is
resumed, and the runs it left queued are queued again.

Called only through ``Runner`` (``runs/engine.py``), which only the door (``runs/door.py``) asks to
start a run. A started run's task is the driver's (``runs/drive.py``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..config import Settings
from ..domain.graph import StepNode
from ..domain.pipeline import Pipeline, node_branch
from ..domain.queue import Ticket
from ..domain.states import RunStatus, StepStatus
from ..domain.versions import ReadDefinition
from ..errors import BadRequest, DatabaseUnavailable, MaoError, NotFound
from ..phases import phase
from ..store.backfills import NewBackfill
from ..store.run_changes import RunChange
from ..store.runs import NewRun, RunRecords, UnfinishedRun
from ..store.tables import utcnow
from ..store.versions import PipelineVersions
from .active import ActiveRun, LiveRuns
from .admission import Admission, Busy
from .attempt import Adopted
from .drive import Driver
from .execution import Execution

log = logging.getLogger(__name__)

# A queued run whose start met the database away waits this long before it is admitted again.
REQUEUE_DELAY = 5.0


@dataclass(eq=False)  # identity: one per engine, its bound methods are callbacks
class Launcher:
    """Records runs and starts them (now, or when admission gives a queued one its turn)."""

    settings: Settings
    versions: PipelineVersions
    records: RunRecords
    admission: Admission
    execution: Execution
    live: LiveRuns
    driver: Driver

    async def start_run(
        self,
        name: str,
        trigger: str,
        schedule_id: str | None,
        *,
        priority: int,
        busy: Busy,
        version: int | None,
        retry_of: str | None,
        registrations_checked: bool,
        cause: dict[str, Any],
        definition: ReadDefinition | None = None,
    ) -> str:
        """``Runner.start``: record one run, start it or queue it; its id."""
        ticket = Ticket(
            uuid.uuid4().hex, name, trigger, priority, utcnow(), cause.get("tick_at"), schedule_id,
            side_by_side=busy is Busy.ALLOW, version=version, retry_of=retry_of,
        )  # fmt: skip
        now = self.admission.reserve(ticket, busy)  # before any await: two requests cannot both start
        try:
            with phase("run: the pipeline's definition"):
                # Checked right after the reservation, before any await: what the caller read is
                # what a read now would find, or it is read again.
                carried = version is None and definition is not None and self.versions.still_current(name, definition)
                if carried:
                    assert definition is not None
                    pipeline, number = definition.definition.pipeline, definition.definition.version
                else:
                    pipeline, number = await self._pipeline(name, version)
                # The caller's check of the registrations stands for the run's only for the
                # definition it checked: one read again (an init since) is compared by the run.
                checked = registrations_checked and (definition is None or carried)
                nodes = pipeline.graph()
            # A queued run takes its version when it starts, unless it asked for one.
            recorded = number if now or version is not None else None
            with phase("db: record the run"):
                await self.records.create_many([self._new_run(ticket, pipeline, nodes, now, cause, recorded)])
        except BaseException:
            self.admission.drop(ticket.run_id)
            raise
        if now:
            self._launch(ticket, pipeline, nodes, RunStatus.RUNNING, checked)
        else:
            log.info("run %s of pipeline %s queued (%s, priority %d)", ticket.run_id, name, trigger, priority)
            self.admission.enqueue([ticket])
        return ticket.run_id

    async def queue_runs(
        self,
        name: str,
        trigger: str,
        causes: Sequence[dict[str, Any]],
        priority: int,
        version: int | None,
        backfill: NewBackfill | None,
    ) -> list[str]:
        """``Runner.queue_many``: record runs queued in this order, in one transaction; their ids."""
        pipeline, _ = await self._pipeline(name, version)
        nodes = pipeline.graph()
        base = utcnow()
        tickets = [
            Ticket(
                uuid.uuid4().hex, name, trigger, priority, base + timedelta(microseconds=i), c.get("tick_at"),
                version=version,
            )  # fmt: skip
            for i, c in enumerate(causes)
        ]
        await self.records.create_many(
            [self._new_run(t, pipeline, nodes, False, c, version) for t, c in zip(tickets, causes, strict=True)],
            backfill,
        )
        self.admission.enqueue(tickets)
        return [t.run_id for t in tickets]

    def resume(self, record: UnfinishedRun, pipeline: Pipeline, adopted: dict[str, Adopted]) -> None:
        """``Runner.resume``: a run a previous process left unfinished goes on from its record."""
        statuses = {step.name: StepStatus(step.status) for step in record.steps}
        run = ActiveRun(
            record.id, pipeline, pipeline.graph(), record.status, statuses, priority=record.priority,
            queued_at=record.created_at, side_by_side=record.side_by_side,
        )  # fmt: skip
        for attempt in adopted.values():
            self.execution.claim(run.id, attempt.handle)
        self.live.add(run, self.driver.execute(run, adopted, started_at=record.started_at))
        self.admission.resumed(run.id, pipeline.name)
        log.info(
            "run %s of pipeline %s resumed (%s)", run.id, pipeline.name,
            ", ".join(f"step {n} attempt {a.number} adopted" for n, a in adopted.items()) or "no step was running",
        )  # fmt: skip

    async def restore_queue(self) -> int:
        """At start, after the reconciler: re-admit the runs a previous process left queued."""
        tickets = await self.records.queued()
        self.admission.enqueue(tickets)
        return len(tickets)

    async def _pipeline(self, name: str, version: int | None = None) -> tuple[Pipeline, int | None]:
        """The pipeline a run takes (its current definition, or ``version``) and its version number."""
        found = await self.versions.for_run(name, version)
        if found is None:
            raise NotFound(f"pipeline {name!r} is not initialised on this instance (POST /pipeline/init)")
        if version is not None and (missing := found.pipeline.missing_private_values()):
            raise BadRequest(
                f"version {version} of pipeline {name!r} marks private variables this instance holds no "
                f"value for now: {', '.join(missing)} (give them in a step's private_env at an init)",
                code="missing_private_values",
                missing=missing,
            )
        return found.pipeline, found.version

    def _branches(self, pipeline: Pipeline) -> list[str]:
        return [node_branch(s.name, self.settings.instance_name) for s in pipeline.steps]

    def _new_run(
        self,
        ticket: Ticket,
        pipeline: Pipeline,
        nodes: list[StepNode],
        now: bool,
        cause: dict[str, Any],
        version: int | None,
    ) -> NewRun:
        # A run that starts now is recorded running at once (nothing queues it: the ``pending ->
        # running`` write would follow within the same millisecond); a queued one when its turn comes.
        status = RunStatus.RUNNING if now else RunStatus.QUEUED
        return NewRun(
            ticket.run_id, pipeline, ticket.trigger, nodes, self._branches(pipeline), status,
            ticket.priority, ticket.queued_at, ticket.schedule_id, cause, ticket.side_by_side, version,
            ticket.retry_of, started_at=ticket.queued_at if now else None,
        )  # fmt: skip

    def _launch(
        self, ticket: Ticket, pipeline: Pipeline, nodes: list[StepNode], status: RunStatus, checked: bool = False
    ) -> None:
        steps = dict.fromkeys((n.name for n in nodes), StepStatus.PENDING)
        run = ActiveRun(ticket.run_id, pipeline, nodes, status, steps, priority=ticket.priority, queued_at=ticket.queued_at, side_by_side=ticket.side_by_side, retry_of=ticket.retry_of, registrations_checked=checked)  # fmt: skip
        started_at = ticket.queued_at if status is RunStatus.RUNNING else None  # recorded running already
        self.live.add(run, self.driver.execute(run, started_at=started_at, starting=True))
        self.admission.started(run.id)
        log.info("run %s of pipeline %s started (%s)", run.id, pipeline.name, ticket.trigger)

    async def start_queued(self, ticket: Ticket) -> None:
        """Admission's launcher: a queued run's turn has come. It runs the pipeline as it is now (or
        the version it asked for). A pipeline (or version) gone fails the run; a database away puts
        it back in the queue for a later try."""
        try:
            pipeline, number = await self._pipeline(ticket.pipeline, ticket.version)
            nodes = pipeline.graph()
            await self.records.restart_steps(
                ticket.run_id, pipeline, nodes, self._branches(pipeline), number
            )
        except DatabaseUnavailable as exc:
            self._requeue(ticket, exc)
            return
        except MaoError as exc:
            log.warning("queued run %s of %s cannot start: %s", ticket.run_id, ticket.pipeline, exc.message)
            try:
                await self.records.change_run(
                    RunChange(ticket.run_id, RunStatus.FAILED, ended_at=utcnow(), error=f"could not start: {exc.message}")
                )
            except MaoError as unrecorded:
                self._requeue(ticket, unrecorded)
                return
            self.admission.finished(ticket.run_id)
            return
        self._launch(ticket, pipeline, nodes, RunStatus.QUEUED)

    def _requeue(self, ticket: Ticket, exc: MaoError) -> None:
        log.warning(
            "queued run %s of %s not started: %s; it stays queued and is tried again in %.0f s",
            ticket.run_id, ticket.pipeline, exc.message, REQUEUE_DELAY,
        )  # fmt: skip
        self.admission.requeue_later(ticket, REQUEUE_DELAY)
