"""The Docker Swarm backend (``kind=swarm``, docs/backends.md#docker-swarm).

One ``replicated-job`` service per attempt (or shard attempt), named ``spec.name``, carrying the
identity as labels on the service and its task containers; no restart (MAO retries); the tool's uid
(never 0), every capability dropped, pids/memory/CPU limits (reserved too, so that Swarm places by
capacity), placement constraints from the step's ``placement`` (node labels). Data in ``shared`` mode
(staging.py). Created with the image already resolved (never asking a registry) and without waiting
for the service to converge: one watch polls the swarm for every attempt (swarm_watch.py). The service
body is swarm_service.py, the log swarm_logs.py, finding and removing objects swarm_objects.py, what
the backend enforces and whether a step may run swarm_policy.py.

Swarm has no job deadline and cannot set ``no-new-privileges`` per service (Docker 20.10): ``wait``
enforces ``timeout`` itself, from the task's start, and ``start_timeout`` from the submission; the
engine's daemon must run with ``--no-new-privileges``, or the operator accepts the weaker rule in the
backend's settings (``ACCEPT_WITHOUT_NO_NEW_PRIVILEGES``), and ``health`` and ``capabilities`` say which.

An ended service is kept, with its log, until ``cancel`` removes it: the caller reads the log to its
end, then cancels. ``cancel`` removes the service *and* its task containers and returns once both are
gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from .cluster_backend import CancelledNames, ClusterBackend, NameLocks, age
from .engine_api import EngineApi, EngineConflict, EngineError
from .seam import (
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
from .staging import SharedStaging
from .swarm_logs import ServiceLogs
from .swarm_objects import SERVICE_NAME_LABEL, SwarmObjects
from .swarm_policy import FACTS_TTL, KIND, SwarmPolicy
from .swarm_service import ServiceOptions, service_body
from .swarm_settings import SwarmSettings
from .swarm_watch import ENDED, TASK_RUNNING, ServiceView, SwarmWatch, parse_time, task_end

__all__ = ["KIND", "SERVICE_NAME_LABEL", "SwarmBackend", "SwarmSettings"]

log = logging.getLogger(__name__)

# Seconds after a container's end within which the engine may still log its OOM (see _oom_evidence).
_OOM_EVENT_GRACE = 2.0
_EVENTS_ANSWER = 30.0  # seconds the engine has to answer that question (EngineApi's own default)


@dataclass(frozen=True)
class _Observed:
    """When this process saw an attempt waiting, running and ended (monotonic; None: not seen)."""

    waiting: float | None
    running: float | None
    seen_end: float


class SwarmBackend(ClusterBackend[SwarmPolicy]):
    """The ``Backend`` of one swarm (``name`` is the operator's, MAO_BACKENDS)."""

    kind = KIND

    def __init__(self, name: str, settings: SwarmSettings, *, max_output_bytes: int | None = None) -> None:
        self.name = name
        self.settings = settings
        self._api = EngineApi(settings.docker_host, version=settings.api_version, tls=settings.tls())
        self._watch = SwarmWatch(self._api, settings.poll_interval)
        self._objects = SwarmObjects(self._api, name, remove_timeout=settings.cancel_timeout)
        self._logs = ServiceLogs(
            self._api, self._watch, name, settle=settings.log_settle_seconds, retry=settings.poll_interval
        )
        self.staging = SharedStaging(
            settings.shared_root,
            settle_seconds=settings.output_settle_seconds,
            max_output_bytes=max_output_bytes,
        )
        self.policy = SwarmPolicy(name, settings, self._api, self.staging)
        self._submitting = NameLocks()
        self._submitted: dict[str, float] = {}  # name -> monotonic time of this process's submission
        self._cancelled = CancelledNames()

    # -- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._api.start()
        try:
            await self.policy.facts()
        except BackendUnavailable as exc:
            log.warning("Backend %s: %s (health says so until it answers)", self.name, exc.message)

    async def close(self) -> None:
        await self._watch.close()
        await self._api.close()

    # -- one attempt -------------------------------------------------------------------------------------

    async def _submit(self, spec: ContainerSpec) -> Handle:
        existing = await self._objects.service(spec.name)
        if existing is not None:
            return self._existing(spec, existing)
        image = spec.image_id or await self.resolve_image(spec.image) or spec.image
        facts = await self.policy.facts(max_age=FACTS_TTL)
        try:
            staged = await self.staging.stage_in(spec)
        except OSError as exc:
            raise BackendUnavailable(
                f"backend {self.name!r}: the attempt's data could not be staged under the shared root "
                f"{self.settings.shared_root}: {exc} (docs/backends.md#shared-a-folder-mounted-everywhere-swarm-slurm)"
            ) from exc
        options = ServiceOptions(
            self.settings.networks, self.settings.reserve_resources, facts.max_node_cpus, self.settings.gpu_resource
        )
        body = service_body(spec, image, staged, options)
        try:
            created = await self._api.call(
                "POST", "/services/create", f"creating service {spec.name}", body=body
            )
        except EngineConflict:
            existing = await self._objects.service(spec.name)  # made meanwhile by someone else
            if existing is None:
                raise
            return self._existing(spec, existing)
        except EngineError as exc:
            await self.staging.discard(spec.name)
            raise BackendRejected(
                self.name, "backend", f"backend {self.name!r} refused the service: {exc.message}"
            ) from exc
        self._submitted[spec.name] = time.monotonic()
        log.info("Backend %s: submitted %s (service %s)", self.name, spec.name, created.get("ID"))
        return Handle(backend=self.name, name=spec.name, engine_id=str(created.get("ID")))

    def _existing(self, spec: ContainerSpec, service: dict[str, Any]) -> Handle:
        labels = (service.get("Spec") or {}).get("Labels") or {}
        mine = spec.identity.labels()
        if any(labels.get(key) != value for key, value in mine.items()):
            # The name is a hash and a prefix of the run id: another attempt's object must not pass
            # for this one.
            whose = ", ".join(f"{key}={labels.get(key)}" for key in sorted(mine))
            raise BackendRejected(
                self.name,
                "backend",
                f"a service named {spec.name!r} exists on the swarm and is another's ({whose})",
            )
        return Handle(backend=self.name, name=spec.name, engine_id=str(service.get("ID")))

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        start_timeout = spec.start_timeout or self.settings.start_timeout
        # Durations on this host's monotonic clock; engine timestamps only for an attempt this process
        # did not see start (adopted after a restart), where nothing else says since when.
        waiting_since: float | None = self._submitted.get(handle.name)
        running_since: float | None = None
        seen, begun_after = 0, time.monotonic()
        with self._watch.interest(handle.name):
            while True:
                current = await self._watch.after(seen, begun_after)
                seen, now = current.number, time.monotonic()
                view = current.services.get(handle.name)
                if view is None:
                    return await self._vanished(handle)
                if view.state in ENDED:
                    observed = _Observed(waiting_since, running_since, now)
                    return await self._finish(handle, spec, view, observed)
                if view.state == TASK_RUNNING:
                    if running_since is None:
                        running_since = now if waiting_since is not None else now - age(view.state_since)
                    node = current.nodes.get(view.node_id or "")
                    if node is not None and node.state in ("down", "disconnected"):
                        message = f"node {node.hostname} is {node.state}"
                        return await self._stop(handle, spec, view, EndKind.NODE_LOST, message)
                    if now - running_since > spec.timeout:
                        message = f"still running after the step's timeout of {spec.timeout:g}s"
                        run = now - running_since
                        return await self._stop(
                            handle, spec, view, EndKind.TIMED_OUT, message, run_seconds=run
                        )
                    continue
                if waiting_since is None:
                    waiting_since = now - age(view.created_at)
                if now - waiting_since > start_timeout:
                    message = f"not started within {start_timeout:g}s (start_timeout); the swarm says: {view.reason}"
                    queued = now - waiting_since
                    return await self._stop(
                        handle, spec, view, EndKind.UNSCHEDULABLE, message, queued_seconds=queued
                    )

    async def _stop(
        self,
        handle: Handle,
        spec: ContainerSpec,
        view: ServiceView,
        kind: EndKind,
        message: str,
        **fields: Any,
    ) -> End:
        """End the attempt on MAO's decision: its last lines first (the service's log goes with it)."""
        tail = await self._logs.tail(handle.name, secret_values(spec)) if view.container_id else ""
        await self._remove(handle.name)
        return self._end(kind, view, message, log_tail=tail, **fields)

    async def _vanished(self, handle: Handle) -> End:
        if handle.name in self._cancelled:
            await self.staging.discard(handle.name)
            return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=handle.engine_id)
        await self._remove(handle.name)  # its containers and staged folder, if any are left
        message = f"service {handle.name} was removed from outside MAO (docker service rm?)"
        return End(kind=EndKind.NODE_LOST, engine_id=handle.engine_id, message=message)

    async def _finish(
        self, handle: Handle, spec: ContainerSpec, view: ServiceView, observed: _Observed
    ) -> End:
        if handle.name in self._cancelled:
            await self.staging.discard(handle.name)
            return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=view.service_id)
        kind, code, message = task_end(view)
        container = await self._objects.container(view.container_id)
        state = (container or {}).get("State") or {}
        started = parse_time(state.get("StartedAt"))
        ended = parse_time(state.get("FinishedAt")) or view.state_since
        if code == 137:
            evidence = await self._oom_evidence(view, state, started, ended)
            kind, message = memory_kill(kind, message, evidence, spec.limits.memory is not None)
        queued = run = None
        if started is not None and view.created_at is not None:
            queued = max(0.0, (started - view.created_at).total_seconds())
        if started is not None and ended is not None:
            run = max(0.0, (ended - started).total_seconds())
        elif observed.running is not None:  # on another node: what this process saw, to an interval
            run = observed.seen_end - observed.running
            if observed.waiting is not None:
                queued = max(0.0, observed.running - observed.waiting)
        kind, message = await self.staging.end_with_output(spec, kind, message)
        await self.staging.discard(handle.name)
        local = view.container_id if container is not None else None
        tail = await self._logs.tail(handle.name, secret_values(spec), container=local)
        return self._end(
            kind,
            view,
            message,
            exit_code=code,
            queued_seconds=queued,
            run_seconds=run,
            started_at=started,
            ended_at=ended,
            log_tail=tail,
        )

    async def _oom_evidence(
        self, view: ServiceView, state: dict[str, Any], started: datetime | None, ended: datetime | None
    ) -> OomEvidence:
        """What this engine knows of an exit 137: its flag, else its event log (see memory_kill)."""
        if not state:
            return OomEvidence.NO_CONTAINER
        if state.get("OOMKilled"):
            return OomEvidence.FLAGGED
        if view.container_id is None or started is None or ended is None:
            return OomEvidence.NONE
        # containerd's OOM and exit events race: the OOM one may reach the engine just after the
        # exit; the engine is asked to wait for it until a moment after the container's end.
        until = ended + timedelta(seconds=_OOM_EVENT_GRACE)
        try:
            async with asyncio.timeout(_OOM_EVENT_GRACE + _EVENTS_ANSWER):
                seen = await self._objects.oom_recorded(view.container_id, started, until)
        except (TimeoutError, BackendUnavailable, EngineError) as exc:
            log.warning("Backend %s: could not read the engine's events: %s", self.name, exc)
            return OomEvidence.NONE
        return OomEvidence.EVENT if seen else OomEvidence.NONE

    def _end(self, kind: EndKind, view: ServiceView, message: str, **fields: Any) -> End:
        node = self._watch.node_name(view.node_id)
        return End(
            kind=kind, message=message, node=node, engine_id=view.service_id, image_id=view.image, **fields
        )

    def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        return self._logs.read(handle.name, follow=follow, since=since)

    # -- removal ---------------------------------------------------------------------------------------

    async def cancel(self, handle: Handle) -> None:
        """Remove the service and its task containers, wait until both are gone, drop the staged folder.
        A ``wait`` on it ends ``cancelled``."""
        self._cancelled.add(handle.name)
        await self._remove(handle.name)

    async def _remove(self, name: str) -> None:
        await self._objects.remove(name)
        await self.staging.discard(name)

    async def list_managed(self, instance: str) -> list[Managed]:
        return await self._objects.managed(instance)


class OomEvidence(Enum):
    """What the engine says of a task container that exited 137 (a SIGKILL)."""

    FLAGGED = "flagged"  # State.OOMKilled
    EVENT = "event"  # no flag, but the engine logged an ``oom`` event for it
    NONE = "none"  # the container is here and nothing says out of memory
    NO_CONTAINER = "no_container"  # gone, or on another node: nothing to ask


def memory_kill(
    kind: EndKind, message: str, evidence: OomEvidence, memory_limited: bool
) -> tuple[EndKind, str]:
    """The end of an exit 137 from what the engine knows. A container on another node cannot be asked:
    under a memory limit, out of memory is then the likely cause and the message says it is a guess.
    A SIGKILL the engine recorded no OOM for stays ``failed`` (the tool, or something in it, killed it)."""
    if evidence in (OomEvidence.FLAGGED, OomEvidence.EVENT):
        return EndKind.OOM_KILLED, "killed by the kernel: out of memory (the step's memory limit)"
    if evidence is OomEvidence.NO_CONTAINER and memory_limited:
        return (
            EndKind.OOM_KILLED,
            "exit 137 under a memory limit: most likely out of memory (the container is on another node)",
        )
    if evidence is OomEvidence.NONE:
        return kind, f"{message} (a SIGKILL or the tool's own code: the engine recorded no out-of-memory kill)"
    return kind, message



def _is_a_backend(backend: SwarmBackend) -> Backend:
    return backend  # mypy holds SwarmBackend to the seam's Protocol here
