"""The run engine: a run is a graph of steps; a step is a series of attempts.

A step starts when every step it ``needs`` has succeeded (or was ``cached``); steps whose needs are
met run side by side. A step whose need did not succeed is ``skipped``; steps that do not depend on
a failed one still run, and the run fails once everything that can run has. Absent ``needs`` is the
previous step, so the prototype's pipelines stay straight lines.

A step's attempts: ``1 + retries`` with the step's tool (retried only when the failure can pass; the
wait is ``retry.backoff``), then once with ``fallback_tool`` when one is set; a step with a
``strategy`` starts with the tool its watcher says and goes on with the replacements after it
(``domain/strategy.py``, ``runs/strategies.py``). ``cache: true`` first
compares the step's memo key (``cache``) with its last success on this instance. One step's work
(pool slot, cache, attempts, fan-out, record) is ``steps.StepWork``; a plain step's attempts are
``step_attempts.StepAttempts``.

Stopping a run (``cancel``, ``run_timeout``): its objects are removed from their backends at once
(and checked gone), steps not yet voting are cancelled (nothing of theirs is pushed: the node branch
is pushed only by the vote), a step already voting finishes its merge, and steps never started take
the stop's status. Shutdown is not a stop: steps whose tool has ended commit and vote, the others
are left where they are (their objects run on, their records say ``running``) and the next start
resumes the run from them (``reconcile.py``, ``Runner.resume``). One run per pipeline at a time on an instance, unless a trigger's overlap policy
is ``allow`` (``start(..., busy=Busy.ALLOW)``: admitted beside them, its steps take a folder of their own when the node
branch's is busy, ``Attempts.branch``); a run does not need etcd (see ``merging.voting``).

Called only by the door (``runs/door.py``, which every cause of a run asks; tests/unit/test_one_door.py
holds it so): ``Runner.start`` (a backfill's ticks: ``queue_many``) records the run and hands it to
admission (``runs/admission.py``): it starts at once or waits ``queued``.

``Runner`` is the one face of the engine the rest of the code uses; its parts, one idea each:

- ``runs/launch.py`` (``Launcher``): recording a run and starting it now or from the queue;
  resuming a run after a restart;
- ``runs/drive.py`` (``Driver``): one run's task, the walk of its step graph;
- ``runs/stopping.py`` (``Stopper``): cancel, a run's timeout, shutdown, and waiting for a run;
- ``runs/recording.py`` (``Recorder``): a run's record as it goes, and its end;
- ``runs/active.py``: the runs in memory (``ActiveRun``, ``LiveRuns``) and the kinds of stop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..config import Settings
from ..datasets import Datasets
from ..domain.pipeline import Pipeline
from ..domain.queue import Ticket
from ..domain.versions import ReadDefinition
from ..executors.backends import Backends
from ..gateway.insights import InsightsPublisher
from ..merging.pins import Pins
from ..merging.registrations import Registrations
from ..merging.voting import Voting
from ..metrics import Metrics
from ..store import Store
from ..store.backfills import NewBackfill
from ..store.retention import existing_runs
from ..store.run_views import RunView
from ..store.runs import RunRecords, UnfinishedRun
from ..store.versions import PipelineVersions
from .active import LiveRuns
from .admission import Admission, Busy, RunInProgress
from .attempt import Adopted, Attempts
from .drive import Driver
from .execution import Execution
from .fanout.attempt import FanOutAttempts
from .launch import Launcher
from .pools import Pools
from .recording import Recorder
from .retry_start import RetryStart
from .step_logs import StepLogs
from .steps import StepWork
from .stopping import Stopper
from .strategies import Strategies

__all__ = ["Busy", "RunInProgress", "Runner"]


class Runner:
    """The run engine: starts, resumes, cancels and waits for runs (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registrations: Registrations,
        datasets: Datasets,
        backends: Backends,
        voting: Voting,
        insights: InsightsPublisher,
        pins: Pins,
    ) -> None:
        self.settings = settings
        self.store = store
        self.records = RunRecords(store)
        self.versions = PipelineVersions(store)
        self.registrations = registrations
        self.datasets = datasets
        self.backends = backends
        step_logs = StepLogs(settings.data_dir, lambda ids: existing_runs(self.records.store, ids))
        self.execution = Execution(backends, step_logs, settings.instance_name)
        self.attempts = Attempts(settings, datasets, self.execution, voting, insights, self.records)
        self.fan_out = FanOutAttempts(settings, self.attempts, self.records)
        self.admission = Admission(settings.max_active_runs, self._start_queued)
        self.pools = Pools(settings.pools)
        self.strategies = Strategies(store)
        self.retry_start = RetryStart(self.records, self.versions, pins, datasets)
        self.recorder = Recorder(self.records)
        self.steps = StepWork(
            settings, pins, datasets, self.execution, self.records, self.attempts, self.fan_out,
            self.pools, self.recorder.set_step, self.strategies,
        )  # fmt: skip
        self.live = LiveRuns()
        self.stopper = Stopper(
            self.live, self.admission, self.records, self.recorder, self.execution, self.attempts
        )
        self.driver = Driver(
            settings, pins, self.records, self.live, self.admission, self.steps, self.recorder, self.stopper,
            self.retry_start,
        )  # fmt: skip
        self.launcher = Launcher(
            settings, self.versions, self.records, self.admission, self.execution, self.live, self.driver
        )

    @property
    def metrics(self) -> Metrics:
        """The node's metrics (set by Node.build), which the driver and the stopper count into."""
        return self.driver.metrics

    @metrics.setter
    def metrics(self, metrics: Metrics) -> None:
        self.driver.metrics = self.stopper.metrics = metrics

    @property
    def pins(self) -> Pins:
        """What a run's registrations are compared with before its first step (``Driver``)."""
        return self.driver.pins

    @pins.setter
    def pins(self, pins: Pins) -> None:
        self.driver.pins = pins

    def active_run(self, pipeline: str) -> str | None:
        """The pipeline's running run, else its first queued one, else None."""
        return self.admission.active_run(pipeline)

    def active_runs(self, pipeline: str) -> list[str]:
        """Every run of ``pipeline`` here, running (oldest first) then queued (in order): several
        running only with overlap ``allow``."""
        return self.admission.active_runs(pipeline)

    def waiting_run(self, pipeline: str) -> str | None:
        """The pipeline's first queued run, or None."""
        return self.admission.waiting_run(pipeline)

    def is_queued(self, run_id: str) -> bool:
        return self.admission.is_queued(run_id)

    async def start(
        self,
        name: str,
        trigger: str,
        schedule_id: str | None = None,
        *,
        priority: int = 0,
        busy: Busy = Busy.REFUSE,
        version: int | None = None,
        retry_of: str | None = None,
        registrations_checked: bool = False,
        definition: ReadDefinition | None = None,
        **cause: Any,
    ) -> str:
        """Record a run of pipeline ``name``: it starts in the background at once, or waits
        ``queued`` for its turn (``runs/admission.py``); returns its id at once. Raises NotFound (no
        such pipeline here) or RunInProgress (the pipeline is busy and ``busy`` says not to wait).
        ``busy=Busy.ALLOW`` (overlap ``allow``): the run starts beside the pipeline's runs, as the
        instance's limit allows; its steps take a folder of their own when the node branch's is busy.
        ``cause``: what the run stands for, kept on its record: ``tick_at`` (a schedule's or a
        backfill's tick), ``trigger_dataset`` and ``trigger_commit`` (a data trigger's advance).
        ``version``: run that earlier version of the pipeline's definition (NotFound
        ``unknown_version`` if it has none such), queued or not; without it the run takes the
        pipeline as it is when it starts. ``retry_of``: the run this one retries (``runs/retry.py``):
        its done steps are taken over when the run starts. ``registrations_checked``: the caller
        (the API) has just compared the pipeline's registrations with its pins; a run that starts
        at once does not compare them again (a queued one does, when its turn comes).
        ``definition``: the pipeline's current definition as the caller (the API) read it; the run
        takes it instead of reading it again while it is still the stored one (no init or delete
        of the pipeline since), never with a ``version``; when it reads it again, it compares the
        registrations itself (the caller's check was of the definition it carried)."""
        return await self.launcher.start_run(
            name, trigger, schedule_id, priority=priority, busy=busy, version=version, retry_of=retry_of,
            registrations_checked=registrations_checked, definition=definition, cause=cause,
        )  # fmt: skip

    async def queue_many(
        self,
        name: str,
        trigger: str,
        causes: Sequence[dict[str, Any]],
        priority: int = 0,
        version: int | None = None,
        backfill: NewBackfill | None = None,
    ) -> list[str]:
        """Record runs of ``name`` queued in this order, in one transaction (a backfill's ticks, with
        the ``backfill`` row they belong to); they start one at a time as admission allows, each
        with pipeline ``version`` if given. Their ids."""
        return await self.launcher.queue_runs(name, trigger, causes, priority, version, backfill)

    async def resume(self, record: UnfinishedRun, pipeline: Pipeline, adopted: dict[str, Adopted]) -> None:
        """Take up a run a previous process left unfinished (``reconcile.py`` decided it can be):
        its steps as recorded; each running step goes on from its ``adopted`` attempt, whose object
        is still on its backend; pending steps start as their needs allow. At start, before any
        other run is admitted."""
        self.launcher.resume(record, pipeline, adopted)

    async def restore_queue(self) -> int:
        """At start, after the reconciler: re-admit the runs a previous process left queued."""
        return await self.launcher.restore_queue()

    async def wait(self, run_id: str) -> RunView | None:
        """Until the run has ended and its record is closed (``Stopper.wait``); the record as the
        run's task read it after its close, or None."""
        return await self.stopper.wait(run_id)

    async def cancel(self, run_id: str) -> None:
        """Stop a running run, or end a queued one ``cancelled`` without starting it; returns once
        stopping has begun. NotFound: no such run; Conflict (409): the run has ended."""
        await self.stopper.cancel(run_id)

    async def cancel_queued_many(
        self, run_ids: Sequence[str], write: Callable[[list[str]], Awaitable[list[str]]]
    ) -> tuple[list[str], list[str]]:
        """End queued runs ``cancelled`` together (a backfill's, ``Stopper.cancel_queued_many``);
        answers (cancelled, starting) ids."""
        return await self.stopper.cancel_queued_many(run_ids, write)

    async def shutdown(self) -> None:
        """Leave the runs where they are, for the next start to resume (see the module docstring)."""
        await self.stopper.shutdown()

    async def _start_queued(self, ticket: Ticket) -> None:
        """Admission's launcher: a queued run's turn has come (``Launcher.start_queued``)."""
        await self.launcher.start_queued(ticket)
