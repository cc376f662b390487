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
import shutil
import time
from collections.abc import AsyncIterator

from ..config.backends.slurm import SlurmSettings
from ..retry import Backoff
from .seam import (
    INSTANCE_LABEL,
    Backend,
    BackendRejected,
    BackendUnavailable,
    Capabilities,
    ContainerSpec,
    End,
    Handle,
    Health,
    Managed,
)
from .slurm_answers import (
    MAO_CANCEL,
    JobView,
    submit_limit_reached,
)
from .slurm_checks import KIND, capabilities_of, cluster_problem, health_of, spec_problem
from .slurm_cli import Answer, ClusterFacts, QueueWatch, SlurmCommands, cluster_facts
from .slurm_command import (
    cpus_per_task,
    env_file,
    instance_prefix,
    parse_job_id,
    run_arguments,
    sbatch_arguments,
    where,
)
from .slurm_ends import SCRIPT, JobEnds, Stop, discard
from .slurm_files import (
    attempt_folders,
    drop_orphan_logs,
    job_files,
    unlink,
    write_job_files,
)
from .slurm_logs import follow_file, read_file
from .staging import SharedStaging

__all__ = ["KIND", "SlurmBackend", "SlurmSettings"]

log = logging.getLogger(__name__)

_FACTS_TTL = 30.0
_DIGEST_SUFFIX = "@sha256:"


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
        self._ends = JobEnds(name, settings, self.commands, self._watch, self.staging)

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
            return health_of(self.settings, None, exc.message, root=None)
        return health_of(self.settings, facts, None, root=await asyncio.to_thread(self.staging.root_problem))

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
        files = job_files(self.settings.shared_root, spec.name)
        try:
            staged = await self.staging.stage_in(spec)
            await asyncio.to_thread(write_job_files, files, env_file(spec.env), spec.all_labels())
        except OSError as exc:
            raise BackendUnavailable(
                f"backend {self.name!r}: the attempt's data could not be staged under the shared root "
                f"{self.settings.shared_root}: {exc} (docs/backends.md#shared-a-folder-mounted-everywhere-swarm-slurm)"
            ) from exc
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
        # BackendUnavailable: whether the controller took it is unknown; the folder stays, and a
        # submit again (or the sweep) finds the job by its name.
        answer = await self._sbatch(spec, args)
        if answer.returncode != 0:
            await self._remove_files(spec.name)
            raise BackendRejected(
                self.name, "backend", f"backend {self.name!r}: sbatch refused the job: {answer.message}"
            )
        try:
            job_id = parse_job_id(answer.stdout)
        except ValueError as exc:
            raise BackendUnavailable(f"backend {self.name}: {exc}") from None
        self._ends.submitted[spec.name] = time.monotonic()
        log.info("Backend %s: submitted %s (job %s)", self.name, spec.name, job_id)
        return Handle(backend=self.name, name=spec.name, engine_id=job_id)

    async def _sbatch(self, spec: ContainerSpec, args: list[str]) -> Answer:
        """sbatch, again while the cluster's submit limit is reached (MaxSubmitJobs of the user or
        QOS: a fan-out larger than the limit waits here, as in the queue), for at most the step's
        start timeout."""
        limit = spec.start_timeout or self.settings.start_timeout
        began = time.monotonic()
        backoff = Backoff(self.settings.poll_interval, 30.0, jitter=False)
        while True:
            answer = await self.commands.run("sbatch", args, what=f"submitting {spec.name}")
            if answer.returncode == 0 or not submit_limit_reached(answer.message):
                return answer
            delay = backoff.peek()
            if time.monotonic() - began + delay > limit:
                await self._remove_files(spec.name)
                raise BackendUnavailable(
                    f"backend {self.name}: the cluster's submit limit held {spec.name} back for longer than "
                    f"its start timeout of {limit:g}s: {answer.message}"
                )
            await asyncio.sleep(backoff.next())

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
        return await self._ends.wait(handle, spec)

    def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        files = job_files(self.settings.shared_root, handle.name)
        if not follow:
            return read_file(files.out, since)

        def find(jobs: dict[str, JobView], names: dict[str, JobView]) -> JobView | None:
            return jobs.get(handle.engine_id) if handle.engine_id else names.get(handle.name)

        return follow_file(
            files.out, since, self._watch, find, self.settings.output_settle_seconds, files.err
        )

    # -- removal ---------------------------------------------------------------------------------------

    async def cancel(self, handle: Handle) -> None:
        """End the job (scancel) and wait until Slurm says it ended (its script removes the container
        then), then remove the attempt folder and the job's files. A ``wait`` on it ends ``cancelled``."""
        self._ends.mark(handle.name, Stop(MAO_CANCEL, time.monotonic()))
        # The usual cancel follows the end this process's wait returned: Slurm need not be asked.
        job = None if handle.name in self._ends.ended else await self._current(handle)
        if job is not None and not job.has_ended:
            await self._ends.scancel(job.job_id)
            self._ends.stops[handle.name].sent = True
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
        self._ends.submitted.pop(handle.name, None)
        self._ends.ended.discard(handle.name)

    async def _current(self, handle: Handle) -> JobView | None:
        jobs = await self.commands.squeue(name=handle.name)
        if handle.engine_id is not None:
            return next((job for job in jobs if job.job_id == handle.engine_id), None)
        named = [job for job in jobs if job.name == handle.name]
        return max(named, key=lambda job: int(job.job_id)) if named else None

    async def _remove_files(self, name: str) -> None:
        await discard(self.staging, name)
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
        keep = set(found) | set(self._ends.submitted)
        await asyncio.to_thread(drop_orphan_logs, self.settings.shared_root, prefixes, keep)
        return sorted(found.values(), key=lambda m: m.handle.name)


def _is_a_backend(backend: SlurmBackend) -> Backend:
    return backend  # mypy holds SlurmBackend to the seam's Protocol here
