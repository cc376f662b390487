"""The Docker Swarm backend (``kind=swarm``, docs/backends.md#docker-swarm).

One ``replicated-job`` service per attempt (or shard attempt), named ``spec.name``, carrying the
identity as labels on the service and its task containers; no restart (MAO retries); the tool's
uid (never 0), every capability dropped, pids/memory/CPU limits (reserved too, so that Swarm places by
capacity), placement constraints from the step's ``placement`` (node labels). Data in ``shared`` mode
(staging.py). Created with the image already resolved (never asking a registry) and without waiting
for the service to converge: the backend polls (swarm_watch.py).

Swarm has no job deadline and cannot set ``no-new-privileges`` per service (Docker 20.10): ``wait``
enforces ``timeout`` itself, from the task's start, and ``start_timeout`` from the submission; the
engine's daemon must run with ``--no-new-privileges``, or the operator accepts the weaker rule in the
backend's settings (``ACCEPT_WITHOUT_NO_NEW_PRIVILEGES``), and ``health`` and ``GET /backends`` say which.

An ended service is kept, with its log, until ``cancel`` removes it: the caller reads the log to its end
first. ``cancel`` removes the service *and* its task containers (Swarm leaves a finished job's
containers behind, moby#42789) and returns once both are gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..datasets.hygiene import OutputRefused
from ..errors import NotFound
from .engine_api import (
    DEFAULT_HOST,
    DEFAULT_VERSION,
    EngineApi,
    EngineConflict,
    EngineError,
    EngineNotFound,
    FrameReader,
    TlsFiles,
    filters,
    host_problem,
)
from .seam import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    BackendRejected,
    BackendUnavailable,
    Capabilities,
    ContainerSpec,
    DataMode,
    End,
    EndKind,
    Handle,
    Health,
    Managed,
    secret_values,
)
from .staging import SharedStaging, StagedOutputMissing
from .swarm_service import ServiceOptions, image_reference, placement_problem, service_body
from .swarm_watch import ENDED, ServiceView, SwarmWatch, parse_time, task_end

log = logging.getLogger(__name__)

KIND = "swarm"
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
NNP_OPTION = "name=no-new-privileges"
MIN_MEMORY = 6 * 1024 * 1024  # the engine refuses less
LOG_TAIL_LINES = 50
LOG_TAIL_BYTES = 64 * 1024
_FACTS_TTL = 30.0


class SwarmSettings(BaseModel):
    """A swarm backend's settings: ``MAO_BACKEND_<NAME>_<KEY>`` with KEY the field name in upper case
    (``MAO_BACKEND_GPU_SHARED_ROOT=/scratch/mao``), or the same keys in MAO_CONFIG_FILE."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A swarm manager's Docker API: unix:///path or tcp://host:port (TLS unless on loopback).
    docker_host: str = DEFAULT_HOST
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Mounted at this same path on the orchestrator's host and on every node (staging.py).
    shared_root: Path
    # Seconds an attempt may wait to be scheduled (placement, capacity, image) when its step sets none.
    start_timeout: float = Field(default=600.0, gt=0)
    # Run steps although the daemon does not enforce no-new-privileges (said in GET /backends).
    accept_without_no_new_privileges: bool = False
    # Seconds between a task's end and reading its output from the shared root (NFS attribute caches).
    output_settle_seconds: float = Field(default=2.0, ge=0, le=600)
    # Seconds between a task's end and the last read of its log (the engine flushes it).
    log_settle_seconds: float = Field(default=0.5, ge=0, le=60)
    poll_interval: float = Field(default=0.5, ge=0.05, le=60)
    # Seconds cancel waits for the service and its containers to be gone.
    cancel_timeout: float = Field(default=30.0, gt=0, le=600)
    # Swarm networks every task joins (none: the task has only its loopback interface).
    networks: tuple[str, ...] = ()
    reserve_resources: bool = True
    api_version: str = DEFAULT_VERSION

    @field_validator("networks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _check(self) -> SwarmSettings:
        if not self.shared_root.is_absolute():
            raise ValueError(f"shared_root: {str(self.shared_root)!r} must be an absolute path")
        if not self.shared_root.is_dir():
            raise ValueError(f"shared_root: {str(self.shared_root)!r} is not a folder on this host")
        tls = [self.tls_ca, self.tls_cert, self.tls_key]
        if any(tls) and not all(tls):
            raise ValueError("tls_ca, tls_cert and tls_key go together: set all three or none")
        problem = host_problem(self.docker_host, all(tls))
        if problem:
            raise ValueError(f"docker_host: {problem}")
        return self

    @classmethod
    def from_environ(cls, name: str, environ: Mapping[str, str]) -> SwarmSettings:
        """The settings of backend ``name`` from ``MAO_BACKEND_<NAME>_*`` variables (until the generic
        reader of MAO_BACKENDS takes over); unknown keys are errors."""
        prefix = f"MAO_BACKEND_{name.upper()}_"
        values = {
            key[len(prefix) :].lower(): value for key, value in environ.items() if key.startswith(prefix)
        }
        return cls.model_validate(values)

    def tls(self) -> TlsFiles | None:
        if self.tls_ca and self.tls_cert and self.tls_key:
            return TlsFiles(self.tls_ca, self.tls_cert, self.tls_key)
        return None


@dataclass(frozen=True)
class _Facts:
    """What the engine said about itself at ``at`` (monotonic)."""

    at: float
    manager: bool
    nodes: int
    no_new_privileges: bool
    node_id: str
    max_node_cpus: float | None


@dataclass
class _NameLock:
    """Submissions of one name, one at a time (a second one finds the first one's service)."""

    lock: asyncio.Lock
    users: int = 0

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class SwarmBackend:
    """The ``Backend`` of one swarm (``name`` is the operator's, MAO_BACKENDS)."""

    kind = KIND

    def __init__(self, name: str, settings: SwarmSettings, *, max_output_bytes: int | None = None) -> None:
        self.name = name
        self.settings = settings
        self._api = EngineApi(settings.docker_host, version=settings.api_version, tls=settings.tls())
        self._watch = SwarmWatch(self._api, settings.poll_interval)
        self.staging = SharedStaging(
            settings.shared_root,
            settle_seconds=settings.output_settle_seconds,
            max_output_bytes=max_output_bytes,
        )
        self._facts: _Facts | None = None
        self._submitting: dict[str, _NameLock] = {}
        self._submitted: dict[str, float] = {}  # name -> monotonic time of our own submission
        self._cancelled: dict[str, float] = {}  # names this process cancelled (their end is ``cancelled``)

    # -- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._api.start()
        try:
            await self._refresh_facts()
        except BackendUnavailable as exc:
            log.warning("Backend %s: %s (health says so until it answers)", self.name, exc.message)

    async def close(self) -> None:
        await self._watch.close()
        await self._api.close()

    async def _refresh_facts(self, max_age: float = 0.0) -> _Facts:
        facts = self._facts
        if facts is not None and time.monotonic() - facts.at <= max_age:
            return facts
        info = await self._api.call("GET", "/info", "reading the engine's information")
        swarm = info.get("Swarm") or {}
        manager = swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))
        cpus: list[float] = []
        if manager:
            for node in await self._api.call("GET", "/nodes", "listing the swarm's nodes") or []:
                nano = ((node.get("Description") or {}).get("Resources") or {}).get("NanoCPUs")
                if nano:
                    cpus.append(int(nano) / 1e9)
        options = [str(option).split(",", 1)[0] for option in info.get("SecurityOptions") or []]
        facts = _Facts(
            at=time.monotonic(),
            manager=manager,
            nodes=len(cpus) or int(swarm.get("Nodes") or 0),
            no_new_privileges=NNP_OPTION in options,
            node_id=str(swarm.get("NodeID") or ""),
            max_node_cpus=max(cpus) if cpus else None,
        )
        self._facts = facts
        return facts

    # -- what it can do ------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        facts = self._facts
        enforces = {"memory", "cpus", "pids", "placement", "start_timeout", "read_only_root"}
        notes = [
            "memory: Swarm cannot set a service's memory-swap: on a node with swap, a tool may use as "
            "much again in swap",
            "every node's Docker daemon should run with --no-new-privileges (only the manager's is checked)",
            "env values, private ones too, are readable by whoever may inspect services on the managers",
            "a finished job's exited containers on other nodes than the manager stay until that node "
            "prunes them (moby#42789)",
        ]
        if facts is not None and facts.no_new_privileges:
            enforces.add("no_new_privileges")
        elif self.settings.accept_without_no_new_privileges:
            notes.insert(
                0, "no-new-privileges is NOT enforced (accepted by ACCEPT_WITHOUT_NO_NEW_PRIVILEGES)"
            )
        return Capabilities(
            kind=KIND,
            data_modes=frozenset({DataMode.SHARED}),
            enforces=frozenset(enforces),
            notes=tuple(notes),
        )

    async def health(self) -> Health:
        try:
            facts = await self._refresh_facts()
        except BackendUnavailable as exc:
            return Health(ok=False, message=exc.message)
        details = {"docker_host": self.settings.docker_host, "shared_root": str(self.settings.shared_root)}
        problems = []
        if not facts.manager:
            problems.append(
                f"the Docker engine at {self.settings.docker_host} is not a swarm manager: run `docker swarm "
                "init` there, or point the backend's DOCKER_HOST at a manager"
            )
        else:
            details["swarm"] = f"manager of {facts.nodes} node(s)"
        if facts.no_new_privileges:
            details["no_new_privileges"] = "enforced by the daemon"
        elif self.settings.accept_without_no_new_privileges:
            details["no_new_privileges"] = (
                f"NOT enforced; accepted by MAO_BACKEND_{self.name.upper()}_ACCEPT_WITHOUT_NO_NEW_PRIVILEGES"
            )
        else:
            details["no_new_privileges"] = "NOT enforced: steps are refused"
            problems.append(self._nnp_message())
        if not os.access(self.settings.shared_root, os.W_OK | os.X_OK):
            problems.append(
                f"the shared root {self.settings.shared_root} is not writable by the orchestrator"
            )
        return Health(ok=not problems, message="; ".join(problems) or "ok", details=details)

    def _nnp_message(self) -> str:
        return (
            f"the Docker daemon at {self.settings.docker_host} does not enforce no-new-privileges, which Swarm "
            'cannot set per service: start dockerd with --no-new-privileges (or "no-new-privileges": true '
            "in daemon.json) on every node, or accept the weaker rule with "
            f"MAO_BACKEND_{self.name.upper()}_ACCEPT_WITHOUT_NO_NEW_PRIVILEGES=1"
        )

    async def resolve_image(self, image: str) -> str | None:
        facts = await self._refresh_facts(max_age=_FACTS_TTL)
        try:
            inspect = await self._api.call(
                "GET", self._api.path("/images/{}/json", image), f"looking up {image}"
            )
        except EngineNotFound:
            inspect = None
        except EngineError as exc:
            raise BackendRejected(
                self.name, "image", f"image: the engine refused {image!r}: {exc.message}"
            ) from exc
        reference = image_reference(image, inspect, single_node=facts.nodes <= 1)
        if reference is None and inspect is not None:
            raise BackendRejected(
                self.name,
                "image",
                f"image: {image!r} has no registry digest, and backend {self.name!r} is a swarm of "
                f"{facts.nodes} nodes: push the image to a registry every node can pull from",
            )
        return reference

    async def validate(self, spec: ContainerSpec) -> None:
        problem = self._spec_problem(spec)
        if problem is not None:
            raise BackendRejected(self.name, *problem)
        facts = await self._refresh_facts(max_age=_FACTS_TTL)
        if not facts.no_new_privileges and not self.settings.accept_without_no_new_privileges:
            raise BackendRejected(self.name, "backend", f"backend {self.name!r}: {self._nnp_message()}")

    def _spec_problem(self, spec: ContainerSpec) -> tuple[str, str] | None:
        where = f"(backend {self.name!r}, kind swarm)"
        if spec.user[0] == 0:
            return "user", f"user: tools never run as root (uid 0) {where}"
        if spec.docker_socket:
            return "docker_socket", f"docker_socket: the Docker socket is never offered on a cluster {where}"
        if spec.limits.gpus:
            return "gpus", f"gpus: this backend cannot give GPUs yet {where}"
        if spec.limits.memory is not None and spec.limits.memory < MIN_MEMORY:
            return "memory", f"memory: at least {MIN_MEMORY} bytes {where}"
        problem = placement_problem(spec.placement)
        if problem:
            return "placement", f"{problem} {where}"
        problem = self.staging.problem(spec)
        if problem:
            return "user", f"user: {problem} {where}"
        return None

    # -- one attempt -------------------------------------------------------------------------------------

    async def submit(self, spec: ContainerSpec) -> Handle:
        await self.validate(spec)
        entry = self._submitting.setdefault(spec.name, _NameLock())
        entry.users += 1
        async with entry.lock:
            try:
                existing = await self._service(spec.name)
                if existing is not None:
                    return self._existing(spec, existing)
                image = spec.image_id or await self.resolve_image(spec.image) or spec.image
                facts = await self._refresh_facts(max_age=_FACTS_TTL)
                staged = await self.staging.stage_in(spec)
                options = ServiceOptions(
                    self.settings.networks, self.settings.reserve_resources, facts.max_node_cpus
                )
                body = service_body(spec, image, staged, options)
                try:
                    created = await self._api.call(
                        "POST", "/services/create", f"creating service {spec.name}", body=body
                    )
                except EngineConflict:
                    existing = await self._service(spec.name)  # another submit of the same attempt won
                    if existing is None:
                        raise
                    return self._existing(spec, existing)
                except EngineError as exc:
                    await self.staging.discard(spec.name)
                    raise BackendRejected(
                        self.name, "backend", f"backend {self.name!r} refused the service: {exc.message}"
                    ) from exc
            finally:
                entry.users -= 1
                if entry.users == 0:
                    self._submitting.pop(spec.name, None)
        self._submitted[spec.name] = time.monotonic()
        log.info("Backend %s: submitted %s (service %s)", self.name, spec.name, created.get("ID"))
        return Handle(backend=self.name, name=spec.name, engine_id=str(created.get("ID")))

    def _existing(self, spec: ContainerSpec, service: dict[str, Any]) -> Handle:
        labels = (service.get("Spec") or {}).get("Labels") or {}
        if labels.get(INSTANCE_LABEL) != spec.identity.instance:
            raise BackendRejected(
                self.name,
                "backend",
                f"a service named {spec.name!r} exists on the swarm and is not this instance's",
            )
        return Handle(backend=self.name, name=spec.name, engine_id=str(service.get("ID")))

    async def _service(self, name: str) -> dict[str, Any] | None:
        try:
            service = await self._api.call(
                "GET", self._api.path("/services/{}", name), f"looking up service {name}"
            )
        except EngineNotFound:
            return None
        return dict(service)

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        start_timeout = spec.start_timeout or self.settings.start_timeout
        ours = self._submitted.get(handle.name)
        waiting_since: float | None = ours
        running_since: float | None = None
        seen = 0
        with self._watch.interest():
            while True:
                current = await self._watch.after(seen)
                seen = current.number
                now = time.monotonic()
                view = current.services.get(handle.name)
                if view is None:
                    return await self._vanished(handle, spec)
                state = view.state
                if state in ENDED:
                    return await self._finish(handle, spec, view, running_since)
                if state == "running":
                    if running_since is None:
                        # Seen waiting before: it started within the last interval. Adopted: ask the engine.
                        running_since = now if waiting_since is not None else now - _age(view.state_since)
                    node = current.nodes.get(view.node_id or "")
                    if node is not None and node.state in ("down", "disconnected"):
                        await self.cancel(handle, cancelled=False)
                        return self._end(EndKind.NODE_LOST, view, f"node {node.hostname} is {node.state}")
                    if now - running_since > spec.timeout:
                        await self.cancel(handle, cancelled=False)
                        return self._end(
                            EndKind.TIMED_OUT,
                            view,
                            f"still running after the step's timeout of {spec.timeout:g}s",
                            run_seconds=now - running_since,
                        )
                    continue
                if waiting_since is None:
                    waiting_since = now - _age(view.created_at)
                if now - waiting_since > start_timeout:
                    await self.cancel(handle, cancelled=False)
                    return self._end(
                        EndKind.UNSCHEDULABLE,
                        view,
                        f"not started within {start_timeout:g}s (start_timeout); the swarm said: {view.reason}",
                        queued_seconds=now - waiting_since,
                    )

    async def _vanished(self, handle: Handle, spec: ContainerSpec) -> End:
        if handle.name in self._cancelled:
            await self.staging.discard(handle.name)
            return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=handle.engine_id)
        await self.cancel(handle, cancelled=False)  # its containers and staged folder, if any are left
        return End(
            kind=EndKind.NODE_LOST,
            engine_id=handle.engine_id,
            message=f"service {handle.name} was removed from outside MAO (docker service rm?)",
        )

    async def _finish(
        self, handle: Handle, spec: ContainerSpec, view: ServiceView, running_since: float | None
    ) -> End:
        if handle.name in self._cancelled:
            await self.staging.discard(handle.name)
            return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=view.service_id)
        kind, code, message = task_end(view)
        container = await self._container(view.container_id)
        state = (container or {}).get("State") or {}
        if code == 137 and state.get("OOMKilled"):
            kind, message = (
                EndKind.OOM_KILLED,
                "killed by the kernel: out of memory (the step's memory limit)",
            )
        elif code == 137 and container is None and spec.limits.memory is not None:
            kind = EndKind.OOM_KILLED
            message = (
                "exit 137 under a memory limit, most likely out of memory (the container is on another node)"
            )
        started, ended = parse_time(state.get("StartedAt")), parse_time(state.get("FinishedAt"))
        if ended is None:
            ended = view.state_since
        queued = run = None
        if started is not None and view.created_at is not None:
            queued = max(0.0, (started - view.created_at).total_seconds())
        if started is not None and ended is not None:
            run = max(0.0, (ended - started).total_seconds())
        if kind is EndKind.COMPLETED:
            try:
                await self.staging.bring_back(spec)
            except OutputRefused as exc:
                kind, message = EndKind.FAILED, f"the tool exited 0 but its output was refused: {exc.message}"
            except (StagedOutputMissing, OSError) as exc:
                kind, message = EndKind.LOST, f"the tool exited 0 but its staged output cannot be read: {exc}"
        await self.staging.discard(handle.name)
        tail = await self._log_tail(handle, spec)
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

    def _end(self, kind: EndKind, view: ServiceView, message: str, **fields: Any) -> End:
        return End(
            kind=kind,
            message=message,
            node=self._watch.node_name(view.node_id),
            engine_id=view.service_id,
            **fields,
        )

    async def _container(self, container_id: str | None) -> dict[str, Any] | None:
        """The task's container when it is on this engine's node (else None: another node's)."""
        if not container_id:
            return None
        try:
            found = await self._api.call(
                "GET", self._api.path("/containers/{}/json", container_id), "inspecting a task"
            )
        except EngineNotFound:
            return None
        return dict(found)

    async def _log_tail(self, handle: Handle, spec: ContainerSpec) -> str:
        chunks = []
        try:
            async for chunk in self._read_log(handle.name, follow=False, tail=LOG_TAIL_LINES):
                chunks.append(chunk)
        except (NotFound, BackendUnavailable):
            return ""
        text = b"".join(chunks)[-LOG_TAIL_BYTES:].decode("utf-8", "replace")
        for value in secret_values(spec).values():
            if value:
                text = text.replace(value, "***")
        return text

    # -- logs --------------------------------------------------------------------------------------------

    async def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        """The service's log from byte ``since``. Swarm's followed log never ends by itself (it waits
        for more tasks): it is cut once the watch saw the task end (plus the log settle time), then
        one more read from the start hands out whatever the followed stream had not carried. A stream
        that drops while the task runs is opened again; every stream is read from the log's start and
        the bytes already handed out are skipped, so nothing is lost or doubled."""
        cursor = _Cursor(since)
        if follow:
            with self._watch.interest():
                ended = asyncio.create_task(self._ended(handle.name))
                try:
                    while not ended.done():
                        cursor.restart()
                        try:
                            async for chunk in self._read_log(handle.name, follow=True, until=ended):
                                part = cursor.take(chunk)
                                if part:
                                    yield part
                        except NotFound:
                            if cursor.position == 0 and not cursor.streams:
                                raise
                            break
                        cursor.streams += 1
                        if not ended.done():
                            await asyncio.sleep(self.settings.poll_interval)  # dropped: open it again
                finally:
                    ended.cancel()
                    if ended.done() and not ended.cancelled() and ended.exception() is not None:
                        log.debug(
                            "Backend %s: the end of %s was not seen: %s",
                            self.name,
                            handle.name,
                            ended.exception(),
                        )
        cursor.restart()
        try:
            async for chunk in self._read_log(handle.name, follow=False):
                part = cursor.take(chunk)
                if part:
                    yield part
        except NotFound:
            if not follow:
                raise

    async def _ended(self, name: str) -> None:
        """Return once the service's task ended (or the service is gone), plus the log settle time."""
        seen = 0
        while True:
            current = await self._watch.after(seen)
            seen = current.number
            view = current.services.get(name)
            if view is None or view.state in ENDED:
                break
        await asyncio.sleep(self.settings.log_settle_seconds)

    async def _read_log(
        self, name: str, *, follow: bool, tail: int | None = None, until: asyncio.Task[None] | None = None
    ) -> AsyncIterator[bytes]:
        """The log's payload bytes (stdout and stderr in their order), until its end, or ``until`` is
        done. A followed stream that drops simply ends (the caller opens another); a plain read that
        drops raises BackendUnavailable."""
        params = {"stdout": "1", "stderr": "1", "follow": "1" if follow else "0"}
        if tail is not None:
            params["tail"] = str(tail)
        path = self._api.path("/services/{}/logs", name)
        reader = FrameReader()
        try:
            async with self._api.stream(path, f"reading the log of {name}", params=params) as response:
                while True:
                    read = asyncio.ensure_future(response.content.readany())
                    waits: set[asyncio.Future[Any]] = {read}
                    if until is not None:
                        waits.add(until)
                    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    if read not in done:
                        read.cancel()
                        return
                    try:
                        data = read.result()
                    except (aiohttp.ClientError, OSError) as exc:
                        if follow:
                            return
                        raise BackendUnavailable(f"the log of {name} broke off: {exc}") from exc
                    if not data:
                        return
                    payload = reader.feed(data)
                    if payload:
                        yield payload
        except EngineNotFound as exc:
            raise NotFound(f"backend {self.name!r} holds no service {name!r} (removed?)") from exc

    # -- removal --------------------------------------------------------------------------------------------

    async def cancel(self, handle: Handle, *, cancelled: bool = True) -> None:
        """Remove the service and its task containers, wait until both are gone, drop the staged folder."""
        if cancelled:
            self._cancelled[handle.name] = time.monotonic()
            self._forget_old_cancels()
        name = handle.name
        try:
            await self._api.call("DELETE", self._api.path("/services/{}", name), f"removing service {name}")
        except EngineNotFound:
            pass
        deadline = time.monotonic() + self.settings.cancel_timeout
        clean_checks = 0
        # Twice clean in a row: a container an agent was creating as the service went is caught too.
        while clean_checks < 2:
            left = await self._remove_containers(name)
            gone = await self._service(name) is None
            clean_checks = clean_checks + 1 if gone and not left else 0
            if clean_checks < 2:
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"backend {self.name!r}: service {name} or its containers are still on the engine "
                        f"{self.settings.cancel_timeout:g}s after their removal; cancel again later"
                    )
                await asyncio.sleep(0.2)
        await self.staging.discard(name)

    async def _remove_containers(self, service: str) -> int:
        """Force-remove the service's task containers on this engine; returns how many there were."""
        found = await self._api.call(
            "GET",
            "/containers/json",
            f"listing the containers of {service}",
            params={"all": "1", **filters(label=[f"{SERVICE_NAME_LABEL}={service}"])},
        )
        for container in found or []:
            try:
                await self._api.call(
                    "DELETE",
                    self._api.path("/containers/{}", str(container["Id"])),
                    f"removing a container of {service}",
                    params={"force": "1", "v": "1"},
                )
            except (EngineNotFound, EngineConflict):
                pass  # gone, or its removal is already under way (the agent's)
        return len(found or [])

    def _forget_old_cancels(self) -> None:
        horizon = time.monotonic() - 3600
        for name in [name for name, at in self._cancelled.items() if at < horizon]:
            del self._cancelled[name]

    async def list_managed(self, instance: str) -> list[Managed]:
        labels = [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={instance}"]
        services, tasks, containers = await asyncio.gather(
            self._api.call("GET", "/services", "listing MAO's services", params=filters(label=labels)),
            self._api.call("GET", "/tasks", "listing MAO's tasks", params=filters(label=labels)),
            self._api.call(
                "GET",
                "/containers/json",
                "listing MAO's containers",
                params={"all": "1", **filters(label=labels)},
            ),
        )
        active = {
            str(t.get("ServiceID")) for t in tasks or [] if (t.get("Status") or {}).get("State") not in ENDED
        }
        found: list[Managed] = []
        names = set()
        for service in services or []:
            spec = service.get("Spec") or {}
            name = str(spec.get("Name"))
            names.add(name)
            service_id = str(service.get("ID"))
            never_ran = not any(str(t.get("ServiceID")) == service_id for t in tasks or [])
            found.append(
                Managed(
                    handle=Handle(backend=self.name, name=name, engine_id=service_id),
                    labels=_mao_labels(spec.get("Labels")),
                    running=service_id in active or never_ran,
                )
            )
        # Task containers whose service is gone (removed from outside, or a crash mid-cancel).
        for container in containers or []:
            labels_of = container.get("Labels") or {}
            service_name = str(labels_of.get(SERVICE_NAME_LABEL) or "")
            if service_name and service_name not in names:
                names.add(service_name)
                found.append(
                    Managed(
                        handle=Handle(backend=self.name, name=service_name),
                        labels=_mao_labels(labels_of),
                        running=container.get("State") == "running",
                    )
                )
        return found


class _Cursor:
    """Where a reader of the log is: ``position`` bytes of the log were handed out or skipped (the
    first ``since``); each new stream starts again at the log's first byte (``restart``)."""

    def __init__(self, since: int) -> None:
        self.since = since
        self.position = 0
        self.streams = 0
        self._got = 0

    def restart(self) -> None:
        self._got = 0

    def take(self, chunk: bytes) -> bytes:
        fresh = chunk[max(0, self.position - self._got) :]
        self._got += len(chunk)
        if not fresh:
            return b""
        start = self.position
        self.position += len(fresh)
        return fresh[max(0, self.since - start) :]


def _mao_labels(labels: object) -> dict[str, str]:
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items() if str(k).startswith("mao.")}


def _age(since: datetime | None) -> float:
    """Seconds from ``since`` (an engine timestamp) to now; 0 when unknown or in the future (skew)."""
    if since is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - since).total_seconds())
