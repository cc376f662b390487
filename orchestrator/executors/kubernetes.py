"""The Kubernetes backend (``kind=kubernetes``, docs/backends.md#kubernetes).

One ``batch/v1`` Job per attempt (or shard attempt), named ``spec.name``: ``backoffLimit: 0`` (MAO
retries), ``activeDeadlineSeconds`` as the cluster's own backstop, ``ttlSecondsAfterFinished``, the
identity as labels (and, in full, as annotations), in the backend's namespace under its service
account. Its pod is kube_pod.py's: stage-in, tool, stage-out, hardened, data in the ``fetch`` mode
(fetch.py, the routes in api/staging.py). Typed ends from kube_status.py; the log copied while it runs
and served from the copy (kube_logs.py); one shared watch of Jobs and pods (kube_watch.py); every call
to the cluster through kube_api.py; what it can do and whether a step may run, kube_policy.py.

``wait`` is the watchdog: ``start_timeout`` from the submission until the tool starts, ``timeout``
from the tool's start (the Job's deadline is only the backstop for an orchestrator that is down).
An ended Job is kept, with the backend's copy of its log, until ``cancel`` removes both (or the TTL
the Job): the caller reads the log, then cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.backends.kubernetes import KubernetesSettings
from ..datasets.hygiene import OutputRefused
from ..retry import Backoff
from .cluster_backend import CancelledNames, ClusterBackend, NameLocks, age
from .fetch import FetchExchange, UploadMissing
from .kube_api import KubeApi, KubeConflict, KubeInvalid
from .kube_logs import KeptLogs, ToolState
from .kube_pod import (
    BACKEND_LABEL,
    STAGE_OUT,
    TOOL,
    job_body,
    managed_selector,
    owner_patch,
    secret_body,
    selector,
)
from .kube_policy import KIND, KubePolicy
from .kube_status import STALE, Job, Pod, Progress, Verdict, end_of, verdict
from .kube_watch import ClusterCache
from .seam import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    Backend,
    BackendRejected,
    BackendUnavailable,
    ContainerSpec,
    End,
    EndKind,
    Handle,
    Managed,
    secret_values,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["KIND", "KubernetesBackend", "KubernetesSettings", "from_instance"]

log = logging.getLogger(__name__)

LOG_WAIT = 30.0  # seconds an end waits for the log copy to be complete
STALE_SECONDS = 3.0  # seconds an ended Job's pod may lag in the watch before the API is asked
# Ends whose Job stays until ``cancel`` (the caller reads its log first); the others are removed at once.
_KEPT_ENDS = frozenset({EndKind.COMPLETED, EndKind.FAILED, EndKind.OOM_KILLED})


class KubernetesBackend(ClusterBackend[KubePolicy]):
    """The ``Backend`` of one namespace of one cluster (``name`` is the operator's, MAO_BACKENDS)."""

    kind = KIND

    def __init__(
        self,
        name: str,
        settings: KubernetesSettings,
        *,
        exchange: FetchExchange,
        state_dir: Path,
    ) -> None:
        self.name = name
        self.settings = settings
        self.exchange = exchange
        self._api = KubeApi(name, settings)
        self._cache = ClusterCache(self._api, selector({MANAGED_LABEL: "true", BACKEND_LABEL: name}))
        self._logs = KeptLogs(self._api, settings.state_dir or state_dir, self._tool_state, self._cache.changed)
        self.policy = KubePolicy(name, settings, self._api)
        self._submitting = NameLocks()
        self._submitted: dict[str, float] = {}  # name -> monotonic time of this process's submission
        self._cancelled = CancelledNames()

    # -- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._api.start()
        except BackendUnavailable as exc:
            log.warning("Backend %s: %s (health says so until it is fixed)", self.name, exc.message)
            return
        self._cache.start()
        with contextlib.suppress(BackendUnavailable):
            await self.policy.cluster_gpus()  # so that capabilities() says the GPUs from the start
        swept = await self.exchange.sweep()
        if swept:
            log.info("Backend %s: removed %d expired staging folders", self.name, len(swept))

    async def close(self) -> None:
        await self._logs.close()
        await self._cache.close()
        await self._api.close()

    # -- one attempt -------------------------------------------------------------------------------------

    async def _submit(self, spec: ContainerSpec) -> Handle:
        existing = await self._api.get_job(spec.name)
        if existing is not None:
            return self._existing(spec, existing)
        start = spec.start_timeout or self.settings.start_timeout
        stage = self.settings.stage_seconds
        plan = await self.exchange.issue(
            spec, self.settings.staging_url, input_seconds=start + stage, output_seconds=start + spec.timeout + stage
        )
        namespace = self.settings.namespace
        tokens = (plan.input_token.get_secret_value(), plan.output_token.get_secret_value())
        await self._api.put_secret(secret_body(spec, self.name, namespace, *tokens))
        image = spec.image_id or spec.image
        try:
            job = await self._api.create_job(job_body(spec, self.name, image, self.settings))
        except KubeConflict:
            found = await self._api.get_job(spec.name)  # made meanwhile by someone else
            if found is None:
                raise BackendUnavailable(f"backend {self.name}: Job {spec.name} conflicts but cannot be read") from None
            return self._existing(spec, found)
        except KubeInvalid as exc:
            await self._api.delete_secret(spec.name)
            await self.exchange.discard(spec.name)
            raise BackendRejected(self.name, "backend", f"backend {self.name!r}: the cluster refused the Job: {exc}") from exc
        await self._api.own_secret(spec.name, owner_patch(spec.name, job.metadata.uid))
        self._submitted[spec.name] = time.monotonic()
        log.info("Backend %s: submitted %s (Job uid %s)", self.name, spec.name, job.metadata.uid)
        return Handle(backend=self.name, name=spec.name, engine_id=job.metadata.uid)

    def _existing(self, spec: ContainerSpec, job: Job) -> Handle:
        found, mine = job.metadata.annotations, spec.identity.labels()
        if any(found.get(key) != value for key, value in mine.items()):
            # The name is a hash and a prefix of the run id: another attempt's Job must not pass for this one.
            whose = ", ".join(f"{key}={found.get(key)}" for key in sorted(mine))
            raise BackendRejected(
                self.name, "backend", f"a Job named {spec.name!r} exists in the namespace and is another's ({whose})"
            )
        return Handle(backend=self.name, name=spec.name, engine_id=job.metadata.uid)

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        self._cache.start()
        name = handle.name
        start_timeout = spec.start_timeout or self.settings.start_timeout
        waiting_since = self._submitted.get(name)
        running_since: float | None = None
        stale_since: float | None = None
        self._logs.ensure(name)
        while True:
            if name in self._cancelled:
                return await self._cancelled_end(handle)
            job = await self._cache.job(name)
            pod = self._cache.pod(name)
            found = verdict(job, pod, pod_seen=name in self._cache.pod_seen)
            now = time.monotonic()
            if isinstance(found, Progress) and found.waiting_reason == STALE:
                stale_since = stale_since or now
                if now - stale_since > STALE_SECONDS:  # the watch is late: ask the API itself
                    pods = await self._api.pods_of(name)
                    fresh = max(pods, key=lambda p: str(p.metadata.creation_timestamp)) if pods else None
                    found = verdict(job, fresh, pod_seen=True)
                    pod = fresh
                if isinstance(found, Progress):
                    await self._cache.changed(name, 0.5)
                    continue
            if isinstance(found, Verdict):
                if name in self._cancelled:
                    return await self._cancelled_end(handle)
                return await self._finish(handle, spec, job, pod, found)
            if found.tool_started is not None:
                if running_since is None:
                    running_since = now if waiting_since is not None else now - age(found.tool_started)
                if now - running_since > spec.timeout:
                    await self._remove(name)
                    message = f"still running after the step's timeout of {spec.timeout:g}s"
                    return await self._watchdog_end(handle, spec, job, pod, EndKind.TIMED_OUT, message, now - running_since)
            else:
                if waiting_since is None:
                    created = job.metadata.creation_timestamp if job is not None else None
                    waiting_since = now - age(created)
                if now - waiting_since > start_timeout:
                    await self._remove(name)
                    message = (
                        f"not started within {start_timeout:g}s (start_timeout); the cluster says: "
                        f"{found.waiting_reason or 'nothing'}"
                    )
                    return await self._watchdog_end(handle, spec, job, pod, EndKind.UNSCHEDULABLE, message, None, now - waiting_since)
            await self._cache.changed(name, min(self.settings.poll_interval, 1.0 if running_since or waiting_since else 5.0))

    async def _finish(self, handle: Handle, spec: ContainerSpec, job: Job | None, pod: Pod | None, found: Verdict) -> End:
        kind, message = found.kind, found.message
        if kind is EndKind.COMPLETED:
            try:
                await self.exchange.bring_back(spec)
            except UploadMissing as exc:
                kind = EndKind.FAILED if exc.refused else EndKind.LOST
                message = f"the tool exited 0 but {exc.message}"
            except OutputRefused as exc:
                kind, message = EndKind.FAILED, f"the tool exited 0 but its output was refused: {exc.message}"
            except OSError as exc:
                kind, message = EndKind.LOST, f"the tool exited 0 but its output cannot be read: {exc}"
        elif found.container == STAGE_OUT and (refused := await self.exchange.refusal(handle.name)):
            kind, message = EndKind.FAILED, f"the tool exited 0 but its output was refused: {refused}"
        elif found.container is not None and found.container != TOOL:
            message = f"{message}; its log: {await self._stage_tail(pod, found.container)}"
        await self.exchange.discard(handle.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._logs.finished(handle.name), LOG_WAIT)
        end = self._end(kind, message, job, pod, spec, exit_code=found.exit_code)
        if kind not in _KEPT_ENDS:
            # The engine's end (a lost pod, an image that cannot be pulled, a failed staging): nothing
            # of it is worth keeping, and a pod waiting on an image would wait until the deadline.
            await self._remove(handle.name)
        return end

    async def _watchdog_end(
        self,
        handle: Handle,
        spec: ContainerSpec,
        job: Job | None,
        pod: Pod | None,
        kind: EndKind,
        message: str,
        run: float | None,
        queued: float | None = None,
    ) -> End:
        await self.exchange.discard(handle.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._logs.finished(handle.name), 5.0)
        end = self._end(kind, message, job, pod, spec, exit_code=None)
        return end.model_copy(update={"run_seconds": run, "queued_seconds": queued if queued is not None else end.queued_seconds})

    async def _cancelled_end(self, handle: Handle) -> End:
        await self.exchange.discard(handle.name)
        return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=handle.engine_id)

    async def _stage_tail(self, pod: Pod | None, container: str) -> str:
        if pod is None:
            return "(the pod is gone)"
        lines: list[bytes] = []
        with contextlib.suppress(BackendUnavailable, Exception):
            async for line in self._api.log_lines(pod.metadata.name, container, None, follow=False):
                lines.append(line.partition(b" ")[2])
        text = b"".join(lines[-5:]).decode("utf-8", "replace").strip()
        return text.replace("\n", " | ")[-500:] or "(empty)"

    def _end(
        self, kind: EndKind, message: str, job: Job | None, pod: Pod | None, spec: ContainerSpec, *, exit_code: int | None
    ) -> End:
        return end_of(kind, message, job, pod, exit_code=exit_code, log_tail=self._tail_now(spec))

    def _tail_now(self, spec: ContainerSpec) -> str:
        return self._logs.tail(spec.name, secret_values(spec))

    async def _tool_state(self, name: str) -> ToolState:
        job = await self._cache.job(name)
        pod = self._cache.pod(name)
        if pod is None:
            finished = job is None or job.finished() is not None or name in self._cache.pod_seen
            return ToolState(None, False, False, gone=finished)
        tool = pod.container(TOOL)
        started = tool is not None and (tool.state.running is not None or tool.state.terminated is not None)
        ended = tool is not None and tool.state.terminated is not None
        gone = not started and isinstance(verdict(job, pod, pod_seen=True), Verdict)
        return ToolState(pod.metadata.name, started, ended, gone)

    def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        self._cache.start()
        return self._logs.read(handle.name, follow=follow, since=since)

    # -- removal ---------------------------------------------------------------------------------------

    async def cancel(self, handle: Handle) -> None:
        """Delete the Job (its pods first), its Secret, the tickets and the log copy; return once the
        cluster holds none of them. A ``wait`` on it ends ``cancelled``."""
        self._cancelled.add(handle.name)
        await self._remove(handle.name)
        await self._logs.discard(handle.name)
        self._cache.forget(handle.name)
        self._submitted.pop(handle.name, None)

    async def _remove(self, name: str) -> None:
        await self._api.delete_job(name, self.settings.cancel_grace_seconds)
        await self._api.delete_secret(name)
        await self.exchange.discard(name)
        deadline = time.monotonic() + self.settings.cancel_timeout
        pause = Backoff(0.1, 1.0, jitter=False)
        while True:
            job = await self._api.get_job(name)
            pods = await self._api.pods_of(name)
            if job is None and not pods:
                return
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"backend {self.name}: Job {name} or its pods still exist {self.settings.cancel_timeout:g}s "
                    "after their deletion"
                )
            if job is not None and job.metadata.deletion_timestamp is None:
                await self._api.delete_job(name, self.settings.cancel_grace_seconds)
            await asyncio.sleep(pause.next())

    async def list_managed(self, instance: str) -> list[Managed]:
        jobs = await self._api.list_jobs(managed_selector(instance))
        found = []
        for job in jobs:
            if job.metadata.annotations.get(INSTANCE_LABEL) != instance:
                continue  # a hash-shortened label value shared by another instance's name
            labels = {k: v for k, v in job.metadata.annotations.items() if k.startswith("mao.")}
            handle = Handle(backend=self.name, name=job.metadata.name, engine_id=job.metadata.uid or None)
            found.append(Managed(handle=handle, labels=labels, running=job.finished() is None))
        # Secrets a crashed submission left without their Job.
        names = {m.handle.name for m in found}
        for secret in await self._api.list_secrets(managed_selector(instance)):
            if secret not in names:
                found.append(Managed(handle=Handle(backend=self.name, name=secret), labels={}, running=False))
        return found


def from_instance(name: str, given: KubernetesSettings, instance: Settings) -> KubernetesBackend:
    """The backend ``name`` of an instance (the registry of kinds builds it so): its tickets and
    tarballs under ``<MAO_DATA_DIR>/staging`` (where the instance's staging routes look), its log
    copies under ``<MAO_DATA_DIR>/kubernetes/<name>``, uploads bounded by MAO_STEP_MAX_OUTPUT."""
    exchange = FetchExchange(instance.data_dir / "staging", max_output_bytes=instance.step_max_output,
                             max_files=given.max_output_files)  # fmt: skip
    return KubernetesBackend(name, given, exchange=exchange, state_dir=instance.data_dir / "kubernetes" / name)



def _is_a_backend(backend: KubernetesBackend) -> Backend:
    return backend  # mypy holds KubernetesBackend to the seam's Protocol here
