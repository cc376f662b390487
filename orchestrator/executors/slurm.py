"""The Slurm backend (``kind=slurm``, docs/backends.md#slurm).

One batch job per attempt (or shard attempt), named ``spec.name``, MAO's identity as JSON in its
comment; ``sbatch --parsable`` of a fixed script (slurm_job.sh) that runs the tool in a container
through the configured runtime (docker or podman) under MAO's trust rules, with everything that
varies as arguments built by slurm_command.py. ``--time`` from the step's timeout, ``--mem``,
``--cpus-per-task``, GPUs as ``--gres=gpu:N``, partition, account, QOS, node features and reservation
from the settings or the step's ``placement``, ``--no-requeue`` (MAO retries). Watched with one
``squeue`` for all attempts (slurm_cli.py: sacct needs slurmdbd, which a cluster may not run; a job
the controller forgot is looked up in the jobcomp file when one is configured), cancelled with
``scancel``. Data in ``shared`` mode (staging.py); the log is the job's output file, followed
while it runs (slurm_logs.py).

The objects this backend owns on the cluster are the instance's jobs that have not ended and the
attempt folders on the shared root (``<root>/<name>/``, with a ``labels.json``): ``list_managed``
lists both, ``cancel`` ends the job and removes the folder and the job's output files. A job that
ended stays in the controller's memory for MinJobAge seconds whatever MAO does: it holds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..datasets.hygiene import OutputRefused
from .seam import (
    INSTANCE_LABEL,
    Backend,
    BackendRejected,
    BackendUnavailable,
    Capabilities,
    ContainerSpec,
    End,
    EndKind,
    Handle,
    Health,
    Managed,
    secret_values,
)
from .slurm_answers import (
    MAO_CANCEL,
    MAO_TIMEOUT,
    MAO_UNSCHEDULABLE,
    JobView,
    job_end,
    parse_jobcomp_line,
    parse_report,
)
from .slurm_checks import KIND, capabilities_of, cluster_problem, health_of, spec_problem
from .slurm_cli import ClusterFacts, QueueWatch, SlurmCommands, cluster_facts
from .slurm_command import (
    cpus_per_task,
    env_file,
    instance_prefix,
    parse_job_id,
    remove_arguments,
    run_arguments,
    sbatch_arguments,
    where,
)
from .slurm_files import (
    attempt_folders,
    drop_orphan_logs,
    job_files,
    jobcomp_line,
    read_text,
    unlink,
    write_job_files,
)
from .slurm_logs import follow_file, read_file, tail
from .slurm_settings import SlurmSettings
from .staging import SharedStaging, StagedOutputMissing

__all__ = ["KIND", "SlurmBackend", "SlurmSettings"]

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("slurm_job.sh")
_FACTS_TTL = 30.0
_MARKS_KEPT = 3600.0
_DIGEST_SUFFIX = "@sha256:"


@dataclass
class _Stop:
    """What MAO did to a job itself (``MAO_CANCEL``, ``MAO_TIMEOUT``, ``MAO_UNSCHEDULABLE``), when,
    and the durations it measured then (Slurm's timestamps are whole seconds)."""

    why: str
    at: float
    queued_seconds: float | None = None
    run_seconds: float | None = None
    reason: str = ""
    sent: bool = False  # scancel was accepted


class SlurmBackend:
    """The ``Backend`` of one Slurm cluster (``name`` is the operator's, MAO_BACKENDS)."""

    kind = KIND

    def __init__(self, name: str, settings: SlurmSettings, *, max_output_bytes: int | None = None) -> None:
        self.name = name
        self.settings = settings
        self.commands = SlurmCommands(name, settings)
        self._watch = QueueWatch(self.commands, settings.poll_interval)
        self.staging = SharedStaging(
            settings.shared_root,
            settle_seconds=settings.output_settle_seconds,
            max_output_bytes=max_output_bytes,
        )
        self._facts: ClusterFacts | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._submitted: dict[str, float] = {}  # name -> monotonic time of this process's submission
        self._stops: dict[str, _Stop] = {}

    # -- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._refresh_facts()
        except BackendUnavailable as exc:
            log.warning("Backend %s: %s (health says so until it answers)", self.name, exc.message)

    async def close(self) -> None:
        await self._watch.close()

    async def _refresh_facts(self, max_age: float = 0.0) -> ClusterFacts:
        facts = self._facts
        if facts is not None and time.monotonic() - facts.at <= max_age:
            return facts
        self._facts = await cluster_facts(self.commands)
        return self._facts

    async def _facts_or_none(self) -> ClusterFacts | None:
        try:
            return await self._refresh_facts(max_age=_FACTS_TTL)
        except BackendUnavailable as exc:
            log.info("Backend %s: cluster not checked: %s", self.name, exc.message)
            return self._facts

    # -- what it can do ------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return capabilities_of(self.settings, self._facts)

    async def health(self) -> Health:
        try:
            facts = await self._refresh_facts()
        except BackendUnavailable as exc:
            return health_of(self.settings, None, exc.message, writable=True)
        writable = os.access(self.settings.shared_root, os.W_OK | os.X_OK)
        return health_of(self.settings, facts, None, writable=writable)

    async def resolve_image(self, image: str) -> str | None:
        """A digest reference as it is; otherwise the image id of the runtime on this host, when it
        has the image (the job then runs that id, and a node without those bits ends
        ``image_unavailable``: never other bits under the same tag); None when neither."""
        if _DIGEST_SUFFIX in image:
            return image
        words = self.settings.runtime_words()
        program = shutil.which(words[0])
        if program is None:
            return None
        answer = await self.commands.run(
            program,
            [*words[1:], "image", "inspect", "--format", "{{.Id}}", image],
            what=f"looking up {image}",
        )
        image_id = answer.stdout.strip()
        return image_id if answer.returncode == 0 and image_id.startswith("sha256:") else None

    async def validate(self, spec: ContainerSpec) -> None:
        problem = spec_problem(spec, self.staging.problem(spec))
        if problem is None:
            problem = cluster_problem(spec, self.settings, await self._facts_or_none())
        if problem is not None:
            field, message = problem
            raise BackendRejected(self.name, field, f"{message} (backend {self.name!r}, kind slurm)")

    # -- one attempt -------------------------------------------------------------------------------------

    async def submit(self, spec: ContainerSpec) -> Handle:
        await self.validate(spec)
        lock = self._locks.setdefault(spec.name, asyncio.Lock())
        try:
            async with lock:
                return await self._submit(spec)
        finally:
            if not lock.locked() and self._locks.get(spec.name) is lock:
                del self._locks[spec.name]

    async def _submit(self, spec: ContainerSpec) -> Handle:
        # The attempt folder exists from before sbatch until the end is collected: without it, no job
        # of this attempt can be waiting to be collected, and the queue need not be asked.
        if await asyncio.to_thread(self.staging.paths(spec.name).folder.is_dir):
            existing = await self._job_named(spec.name)
            if existing is not None:
                return self._existing(spec, existing)
        image = spec.image_id or await self.resolve_image(spec.image) or spec.image
        facts = await self._facts_or_none()
        partition = facts.partition(where(spec, self.settings).partition) if facts else None
        cpus = cpus_per_task(spec, partition.max_cpus if partition else None)
        staged = await self.staging.stage_in(spec)
        files = job_files(self.settings.shared_root, spec.name)
        await asyncio.to_thread(write_job_files, files, env_file(spec.env), spec.all_labels())
        run = run_arguments(
            spec,
            self.settings,
            image=image,
            input_folder=staged.input,
            output_folder=staged.output,
            env=files.env,
            cpus=cpus,
        )
        args = sbatch_arguments(
            spec, self.settings, script=SCRIPT, files=files, run=run, image=image, cpus=cpus
        )
        try:
            answer = await self.commands.run("sbatch", args, what=f"submitting {spec.name}")
        except BackendUnavailable:
            # Whether the controller took it is unknown: the folder stays, and a submit again (or the
            # sweep) finds the job by its name.
            raise
        if answer.returncode != 0:
            await self._remove_files(spec.name)
            raise BackendRejected(
                self.name, "backend", f"backend {self.name!r}: sbatch refused the job: {answer.message}"
            )
        try:
            job_id = parse_job_id(answer.stdout)
        except ValueError as exc:
            raise BackendUnavailable(f"backend {self.name}: {exc}") from None
        self._submitted[spec.name] = time.monotonic()
        log.info("Backend %s: submitted %s (job %s)", self.name, spec.name, job_id)
        return Handle(backend=self.name, name=spec.name, engine_id=job_id)

    async def _job_named(self, name: str) -> JobView | None:
        jobs = await self.commands.squeue(name=name)
        named = [job for job in jobs if job.name == name]
        return max(named, key=lambda job: int(job.job_id)) if named else None

    def _existing(self, spec: ContainerSpec, job: JobView) -> Handle:
        if job.instance != spec.identity.instance:
            raise BackendRejected(
                self.name, "backend", f"a job named {spec.name!r} is in the queue and is not this instance's"
            )
        return Handle(backend=self.name, name=spec.name, engine_id=job.job_id)

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        start_timeout = spec.start_timeout or self.settings.start_timeout
        # Durations on this host's monotonic clock; the controller's timestamps only for an attempt
        # this process did not see start (adopted after a restart).
        waiting_since = self._submitted.get(handle.name)
        running_since: float | None = None
        since = time.monotonic()
        with self._watch.interest():
            while True:
                look = await self._watch.after(since)
                since = look.at + 1e-6
                view = look.find(handle.name, handle.engine_id)
                now = time.monotonic()
                if view is None:
                    return await self._forgotten(handle, spec)
                if view.has_ended:
                    return await self._finish(handle, spec, view)
                stop = self._stops.get(handle.name)
                if stop is not None:
                    if not stop.sent:  # scancel failed (the controller was away): again
                        await self._stop(handle, view, stop)
                    continue  # MAO stopped it: its end comes
                if view.has_started:
                    if running_since is None:
                        running_since = now if waiting_since is not None else now - _age(view.started)
                    if now - running_since > spec.timeout:
                        stop = _Stop(MAO_TIMEOUT, now, run_seconds=now - running_since)
                        await self._stop(handle, view, stop)
                    continue
                if waiting_since is None:
                    waiting_since = now - _age(view.submitted)
                if now - waiting_since > start_timeout:
                    stop = _Stop(
                        MAO_UNSCHEDULABLE, now, queued_seconds=now - waiting_since, reason=view.reason
                    )
                    await self._stop(handle, view, stop)

    async def _stop(self, handle: Handle, view: JobView, stop: _Stop) -> None:
        self._mark(handle.name, stop)
        await self._scancel(view.job_id)
        self._stops[handle.name].sent = True

    def _mark(self, name: str, stop: _Stop) -> None:
        self._stops.setdefault(name, stop)
        for old in [n for n, s in self._stops.items() if s.at < stop.at - _MARKS_KEPT]:
            del self._stops[old]

    async def _scancel(self, job_id: str) -> None:
        answer = await self.commands.run("scancel", [job_id], what=f"cancelling job {job_id}")
        if answer.returncode != 0 and "already completing or completed" not in answer.message.lower():
            if "invalid job id" not in answer.message.lower():
                raise BackendUnavailable(f"backend {self.name}: scancel {job_id}: {answer.message}")

    async def _forgotten(self, handle: Handle, spec: ContainerSpec) -> End:
        """The controller no longer knows the job (past MinJobAge, or it lost its state)."""
        stop = self._stops.get(handle.name)
        if stop is not None and stop.why == MAO_CANCEL:
            await self._discard(handle.name)
            return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=handle.engine_id)
        view = await self._from_jobcomp(handle)
        if view is not None:
            return await self._finish(handle, spec, view)
        await self._discard(handle.name)
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
        if report.started and report.exit_code is None and report.signal is None and report.error is None:
            await self._remove_container(handle.name, view.node or report.node)
        stop = self._stops.get(handle.name)
        verdict = job_end(view, report, stop.why if stop else None, spec.timeout)
        kind, message = verdict.kind, verdict.message
        if stop is not None and stop.why == MAO_UNSCHEDULABLE:
            message = (
                f"not started within {spec.start_timeout or self.settings.start_timeout:g}s (start_timeout)"
            )
            message += f"; Slurm's reason: {stop.reason}" if stop.reason else ""
        if kind is EndKind.COMPLETED:
            try:
                await self.staging.bring_back(spec)
            except OutputRefused as exc:
                kind, message = EndKind.FAILED, f"the tool exited 0 but its output was refused: {exc.message}"
            except (StagedOutputMissing, OSError) as exc:
                kind, message = EndKind.LOST, f"the tool exited 0 but its staged output cannot be read: {exc}"
        await self._discard(handle.name)
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

    def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        path = job_files(self.settings.shared_root, handle.name).out
        if not follow:
            return read_file(path, since)

        def find(jobs: dict[str, JobView], names: dict[str, JobView]) -> JobView | None:
            return jobs.get(handle.engine_id) if handle.engine_id else names.get(handle.name)

        return follow_file(path, since, self._watch, find, self.settings.output_settle_seconds)

    # -- removal ---------------------------------------------------------------------------------------

    async def cancel(self, handle: Handle) -> None:
        """End the job (scancel) and wait until Slurm says it ended (its script removes the container
        then), then remove the attempt folder and the job's files. A ``wait`` on it ends ``cancelled``."""
        self._mark(handle.name, _Stop(MAO_CANCEL, time.monotonic()))
        job = await self._current(handle)
        if job is not None and not job.has_ended:
            await self._scancel(job.job_id)
            self._stops[handle.name].sent = True
            deadline = time.monotonic() + self.settings.cancel_timeout
            while job is not None and not job.has_ended:
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"backend {self.name}: job {job.job_id} ({handle.name}) is still {job.state} "
                        f"{self.settings.cancel_timeout:g}s after scancel"
                    )
                await asyncio.sleep(0.2)
                job = await self._current(handle)
        await self._remove_files(handle.name)
        self._submitted.pop(handle.name, None)

    async def _current(self, handle: Handle) -> JobView | None:
        jobs = await self.commands.squeue(name=handle.name)
        if handle.engine_id is not None:
            return next((job for job in jobs if job.job_id == handle.engine_id), None)
        named = [job for job in jobs if job.name == handle.name]
        return max(named, key=lambda job: int(job.job_id)) if named else None

    async def _discard(self, name: str) -> None:
        """The attempt folder goes (a wait's end and a cancel may remove it at the same time)."""
        for _ in range(3):
            try:
                await self.staging.discard(name)
                return
            except FileNotFoundError:
                continue  # removed meanwhile, by the other one: look again

    async def _remove_files(self, name: str) -> None:
        await self._discard(name)
        files = job_files(self.settings.shared_root, name)
        await asyncio.to_thread(unlink, files.out, files.err)

    async def list_managed(self, instance: str) -> list[Managed]:
        """The instance's jobs that have not ended, and its attempt folders on the shared root (an
        attempt whose end was not collected, or whose submission did not finish)."""
        jobs = await self.commands.squeue()
        folders = await asyncio.to_thread(
            attempt_folders, self.settings.shared_root, self.staging.staged_names()
        )
        found: dict[str, Managed] = {}
        for job in sorted(jobs, key=lambda j: int(j.job_id)):
            if job.has_ended or job.instance != instance or job.labels is None:
                continue
            handle = Handle(backend=self.name, name=job.name, engine_id=job.job_id)
            found[job.name] = Managed(handle=handle, labels=job.labels, running=True)
        latest = {job.name: job for job in sorted(jobs, key=lambda j: int(j.job_id))}
        for name, labels in folders.items():
            if name in found or labels.get(INSTANCE_LABEL) != instance:
                continue
            last = latest.get(name)
            handle = Handle(backend=self.name, name=name, engine_id=last.job_id if last else None)
            found[name] = Managed(handle=handle, labels=labels, running=False)
        prefixes = {instance_prefix(m.handle.name) for m in found.values()}
        keep = set(found) | set(self._submitted)
        await asyncio.to_thread(drop_orphan_logs, self.settings.shared_root, prefixes, keep)
        return sorted(found.values(), key=lambda m: m.handle.name)


def _age(epoch: float | None) -> float:
    """Seconds from ``epoch`` (the controller's clock) to now; 0 when unknown or in the future (skew)."""
    return max(0.0, time.time() - epoch) if epoch is not None else 0.0


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def _is_a_backend(backend: SlurmBackend) -> Backend:
    return backend  # mypy holds SlurmBackend to the seam's Protocol here
