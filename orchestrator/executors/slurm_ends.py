"""How a Slurm backend's jobs end (slurm.py's ``wait``): the one loop over the shared queue watch
that enforces ``start_timeout`` (from the submission) and ``timeout`` (from the job's start), MAO's
own stops of a job (its cancel, its timeout, its start timeout: marked before scancel, so that the
job's CANCELLED state means that and not an operator's scancel), the end read from Slurm's state, the
exit status and the job script's report (slurm_answers.job_end), the output brought back, and a job
the controller has forgotten (the jobcomp file, else ``lost``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .seam import BackendUnavailable, ContainerSpec, End, EndKind, Handle, secret_values
from .slurm_answers import (
    MAO_CANCEL,
    MAO_TIMEOUT,
    MAO_UNSCHEDULABLE,
    JobView,
    job_end,
    parse_jobcomp_line,
    parse_report,
)
from .slurm_cli import QueueWatch, SlurmCommands
from .slurm_command import remove_arguments
from .slurm_files import job_files, jobcomp_line, read_text
from .slurm_logs import tail
from .slurm_settings import SlurmSettings
from .staging import SharedStaging

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("slurm_job.sh")
_MARKS_KEPT = 3600.0


@dataclass
class Stop:
    """What MAO did to a job itself (``MAO_CANCEL``, ``MAO_TIMEOUT``, ``MAO_UNSCHEDULABLE``), when,
    and the durations it measured then (Slurm's timestamps are whole seconds)."""

    why: str
    at: float
    queued_seconds: float | None = None
    run_seconds: float | None = None
    reason: str = ""
    sent: bool = False  # scancel was accepted


class JobEnds:
    """The ends of one backend's jobs; ``submitted`` and ``stops`` are what this process did."""

    def __init__(
        self,
        name: str,
        settings: SlurmSettings,
        commands: SlurmCommands,
        watch: QueueWatch,
        staging: SharedStaging,
    ) -> None:
        self.name = name
        self.settings = settings
        self.commands = commands
        self.watch = watch
        self.staging = staging
        self.submitted: dict[str, float] = {}  # name -> monotonic time of this process's submission
        self.stops: dict[str, Stop] = {}
        self.ended: set[str] = set()  # names whose end a wait returned (and the job ended in Slurm)

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        start_timeout = spec.start_timeout or self.settings.start_timeout
        # Durations on this host's monotonic clock; the controller's timestamps only for an attempt
        # this process did not see start (adopted after a restart).
        waiting_since = self.submitted.get(handle.name)
        running_since: float | None = None
        since = time.monotonic()
        with self.watch.interest():
            while True:
                look = await self.watch.after(since)
                since = look.at + 1e-6
                view = look.find(handle.name, handle.engine_id)
                now = time.monotonic()
                if view is None:
                    return await self._forgotten(handle, spec)
                if view.has_ended:
                    end = await self._finish(handle, spec, view)
                    self.ended.add(handle.name)
                    return end
                stop = self.stops.get(handle.name)
                if stop is not None:
                    if not stop.sent:  # scancel failed (the controller was away): again
                        await self._stop(handle, view, stop)
                    continue  # MAO stopped it: its end comes
                if running_since is None and view.has_started:
                    if waiting_since is None:  # adopted: since the job's start (the script's is close)
                        running_since = now - _age(view.started)
                    elif await self._container_started(handle.name):
                        running_since = now
                if running_since is not None:
                    if now - running_since > spec.timeout:
                        stop = Stop(MAO_TIMEOUT, now, run_seconds=now - running_since)
                        await self._stop(handle, view, stop)
                    continue
                if waiting_since is None:
                    waiting_since = now - _age(view.submitted)
                if now - waiting_since > start_timeout:
                    reason = "the job started, its container did not" if view.has_started else view.reason
                    stop = Stop(MAO_UNSCHEDULABLE, now, queued_seconds=now - waiting_since, reason=reason)
                    await self._stop(handle, view, stop)

    async def _container_started(self, name: str) -> bool:
        """Whether the job's script has started the container: the step's timeout counts from there,
        as on every backend (a node may take seconds between the job's start and the tool's; that
        time counts against start_timeout)."""
        files = job_files(self.settings.shared_root, name)
        return parse_report(await asyncio.to_thread(read_text, files.err)).started

    async def _stop(self, handle: Handle, view: JobView, stop: Stop) -> None:
        self.mark(handle.name, stop)
        await self.scancel(view.job_id)
        self.stops[handle.name].sent = True

    def mark(self, name: str, stop: Stop) -> None:
        self.stops.setdefault(name, stop)
        for old in [n for n, s in self.stops.items() if s.at < stop.at - _MARKS_KEPT]:
            del self.stops[old]

    async def scancel(self, job_id: str) -> None:
        answer = await self.commands.run("scancel", [job_id], what=f"cancelling job {job_id}")
        if answer.returncode != 0 and "already completing or completed" not in answer.message.lower():
            if "invalid job id" not in answer.message.lower():
                raise BackendUnavailable(f"backend {self.name}: scancel {job_id}: {answer.message}")

    async def _forgotten(self, handle: Handle, spec: ContainerSpec) -> End:
        """The controller no longer knows the job (past MinJobAge, or it lost its state)."""
        stop = self.stops.get(handle.name)
        if stop is not None and stop.why == MAO_CANCEL:
            await discard(self.staging, handle.name)
            return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=handle.engine_id)
        view = await self._from_jobcomp(handle)
        if view is not None:
            return await self._finish(handle, spec, view)
        await discard(self.staging, handle.name)
        return End(
            kind=EndKind.LOST,
            engine_id=handle.engine_id,
            message=(
                f"Slurm no longer knows job {handle.engine_id or handle.name} (ended longer ago than the "
                "controller's MinJobAge, or the controller lost its state), and no jobcomp file says how it ended"
            ),
        )

    async def _from_jobcomp(self, handle: Handle) -> JobView | None:
        path = self.settings.jobcomp_file
        if path is None or handle.engine_id is None:
            return None
        line = await asyncio.to_thread(jobcomp_line, path, handle.engine_id)
        view = parse_jobcomp_line(line) if line else None
        return view if view is not None and view.name == handle.name else None

    async def _finish(self, handle: Handle, spec: ContainerSpec, view: JobView) -> End:
        files = job_files(self.settings.shared_root, handle.name)
        report = parse_report(await asyncio.to_thread(read_text, files.err))
        if report.started and report.exit_code is None and report.error is None:
            if report.signal is None or view.state == "NODE_FAIL":
                # Killed outright (SIGKILL), or on a node the controller gave up on: the script may not
                # have removed the container.
                await self._remove_container(handle.name, view.node or report.node)
        stop = self.stops.get(handle.name)
        verdict = job_end(view, report, stop.why if stop else None, spec.timeout)
        kind, message = verdict.kind, verdict.message
        if stop is not None and stop.why == MAO_UNSCHEDULABLE:
            message = (
                f"not started within {spec.start_timeout or self.settings.start_timeout:g}s (start_timeout)"
            )
            message += f"; Slurm's reason: {stop.reason}" if stop.reason else ""
        kind, message = await self.staging.end_with_output(spec, kind, message)
        await discard(self.staging, handle.name)
        queued = run = None
        started = _when(view.started) if view.has_started else None
        ended = _when(view.ended)
        if view.started is not None and view.submitted is not None:
            queued = max(0.0, view.started - view.submitted)
        if view.started is not None and view.ended is not None:
            run = max(0.0, view.ended - view.started)
        if stop is not None and stop.why == MAO_UNSCHEDULABLE:
            queued, run, started = stop.queued_seconds, None, None
        elif stop is not None and stop.why == MAO_TIMEOUT:
            run = max(run or 0.0, stop.run_seconds or 0.0)
        text = (await asyncio.to_thread(tail, files.out)).decode("utf-8", "replace")
        for value in secret_values(spec).values():
            if value:
                text = text.replace(value, "***")
        return End(
            kind=kind,
            exit_code=verdict.exit_code,
            message=message,
            node=view.node or report.node,
            engine_id=view.job_id,
            image_id=spec.image_id,
            queued_seconds=queued,
            run_seconds=run,
            started_at=started,
            ended_at=ended,
            log_tail=text,
        )

    async def _remove_container(self, name: str, node: str | None) -> None:
        """The job's script was killed before it could say how the container ended (SIGKILL): the
        container may still run on the node, which only a job there can reach."""
        if node is None:
            log.warning(
                "Backend %s: %s was killed on an unknown node; its container may be left", self.name, name
            )
            return
        args = remove_arguments(name, node, self.settings, script=SCRIPT)
        try:
            answer = await self.commands.run("sbatch", args, what=f"removing the container of {name}")
        except BackendUnavailable as exc:
            log.warning(
                "Backend %s: the container of %s may be left on %s: %s", self.name, name, node, exc.message
            )
            return
        if answer.returncode != 0:
            log.warning(
                "Backend %s: the container of %s may be left on %s: %s", self.name, name, node, answer.message
            )
        else:
            job = answer.stdout.strip()
            log.info(
                "Backend %s: %s was killed; job %s removes its container from %s", self.name, name, job, node
            )


async def discard(staging: SharedStaging, name: str) -> None:
    """The attempt folder goes (a wait's end and a cancel may remove it at the same time)."""
    for _ in range(3):
        try:
            await staging.discard(name)
            return
        except FileNotFoundError:
            continue  # removed meanwhile, by the other one: look again


def _age(epoch: float | None) -> float:
    """Seconds from ``epoch`` (the controller's clock) to now; 0 when unknown or in the future (skew)."""
    return max(0.0, time.time() - epoch) if epoch is not None else 0.0


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None
