"""``kind=docker``: the executor service (``python -m executor``) on this host's Docker engine, over
its container API (``executor/wire/containers.py``, called over HTTP by executor_api.py), as a seam
``Backend``.

Data mode ``local``: the executor's engine runs on the orchestrator's host, so the attempt's input
and output folders are bound by their host paths (``MAO_HOST_DATA_DIR``). The executor enforces the
timeout (from the container's start) and the start timeout (waiting for one of its
``MAO_EXECUTOR_MAX_PARALLEL`` slots) itself, whoever is waiting, so both hold across an orchestrator
restart; every container survives the orchestrator and is found again by its labels.

Settings (``MAO_BACKEND_<NAME>_<KEY>``, ``DockerSettings``): ``URL`` (default: ``MAO_EXECUTOR_URL``,
with its transport: the executor's Unix socket, or https with ``TLS_FINGERPRINT``, default
``MAO_EXECUTOR_TLS_FINGERPRINT``: docs/security.md#transports), ``TOKEN`` (default
``MAO_EXECUTOR_TOKEN``), ``START_TIMEOUT`` (the default of a step's ``start_timeout``, seconds; none: a
step waits for a slot as long as it takes), ``GPUS`` (the GPUs of the executor's host, which the
executor cannot be asked about: 0, the default, offers none, so a step with ``gpus`` is refused at init).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

from executor.wire.containers import ContainerList, ContainerState, Ending, Phase, SubmitRequest
from executor.wire.models import (
    DEFAULT_LOG_LINES,
    MAX_BODY_BYTES,
    MAX_TIMEOUT,
    describe_validation_error,
)

from ..errors import MaoError
from .executor_api import ExecutorApi, Refused
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
)

log = logging.getLogger(__name__)

KIND = "docker"
# A wait request is held this long by the executor before it answers "still running".
HOLD = 30.0
# What the executor's own framing may add to a body (HTTP headers are not counted by its limit).
BODY_SLACK = 1024
# A submit may pull the image first (MAO_EXECUTOR_PULL_TIMEOUT, 300 s by default).
SUBMIT_TIMEOUT = 600.0
# Names cancelled here, remembered so that a wait that finds the container gone says "cancelled".
CANCELLED_MEMORY = 10_000
# Step fields (orchestrator.models.Step) the request fields come from, for init's 400.
_FIELD_OF = {
    "cmd": "cmd",
    "env": "env",
    "docker_socket": "docker_socket",
    "memory": "memory",
    "cpus": "cpus",
    "gpus": "gpus",
}


_ENDS = {
    Ending.COMPLETED: EndKind.COMPLETED,
    Ending.FAILED: EndKind.FAILED,
    Ending.OOM_KILLED: EndKind.OOM_KILLED,
    Ending.TIMED_OUT: EndKind.TIMED_OUT,
    Ending.UNSCHEDULABLE: EndKind.UNSCHEDULABLE,
    Ending.CANCELLED: EndKind.CANCELLED,
}


class DockerBackend:
    """One executor service as a ``Backend`` (orchestrator/executors/seam.py)."""

    def __init__(
        self,
        name: str,
        url: str,
        token: str,
        host_path: Callable[[Path], Path],
        start_timeout: float | None = None,
        fingerprint: bytes | None = None,
        gpus: int = 0,
    ) -> None:
        self.name = name
        self.gpus = gpus
        self.url = url.rstrip("/")
        self._api = ExecutorApi(name, self.url, token, fingerprint)
        self._host_path = host_path
        self.start_timeout = start_timeout
        self._cancelled: dict[str, None] = {}
        # Submissions that made no object because the engine has no such image: their ends.
        self._unavailable: dict[str, End] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._api.start()

    async def close(self) -> None:
        await self._api.close()

    def capabilities(self) -> Capabilities:
        return Capabilities(
            kind=KIND,
            data_modes=frozenset({DataMode.LOCAL}),
            enforces=frozenset(
                {"memory", "cpus", "pids", "no_new_privileges", "read_only_root", "docker_socket", "start_timeout"}
                | ({"gpus"} if self.gpus else set())
            ),
            log_follow=True,
            gpus=self.gpus,
            notes=(
                "runs on the orchestrator's host; MAO_EXECUTOR_MAX_PARALLEL bounds the containers "
                "at once (a step waits for a slot up to its start_timeout)",
            ),
        )

    async def health(self) -> Health:
        try:
            body = await self._api.json("GET", "/health", None, timeout=10)
        except MaoError as exc:
            return Health(ok=False, message=exc.message)
        details = {k: str(v) for k, v in body.items() if k in ("instance", "running", "docker")}
        details["gpus"] = f"{self.gpus} (declared)" if self.gpus else "none declared"
        return Health(ok=True, message="ok", details=details)

    # -- images and checks -------------------------------------------------------------------------
    async def resolve_image(self, image: str) -> str | None:
        body = await self._api.json("POST", "/image", {"image": image}, timeout=30)
        value = body.get("id")
        return value if isinstance(value, str) else None

    def request(self, spec: ContainerSpec) -> SubmitRequest:
        """``spec`` as the executor's wire model; BackendRejected naming the field it cannot take."""
        try:
            return SubmitRequest(
                name=spec.name,
                image=spec.image,
                cmd=spec.cmd,
                env=dict(spec.env),
                output_dir=str(self._host_path(spec.output.folder)),
                input_dir=str(self._host_path(spec.input.folder)) if spec.input is not None else None,
                user="{}:{}".format(*spec.user),
                docker_socket=spec.docker_socket,
                timeout=min(spec.timeout, MAX_TIMEOUT),
                start_timeout=spec.start_timeout or self.start_timeout,
                # mao.managed is the executor's to set (on everything it creates).
                labels={k: v for k, v in spec.all_labels().items() if k != MANAGED_LABEL},
                memory=spec.limits.memory,
                cpus=spec.limits.cpus,
                pids=spec.limits.pids,
                gpus=spec.limits.gpus or None,
                writable_root=spec.writable_root,
                tmp_size=spec.limits.tmp_bytes,
            )
        except ValidationError as exc:
            first = exc.errors()[0]["loc"][0] if exc.errors() and exc.errors()[0]["loc"] else "step"
            raise BackendRejected(self.name, _FIELD_OF.get(str(first), "step"), describe_validation_error(exc)) from None

    def _gpu_problem(self, asked: int) -> str:
        setting = f"MAO_BACKEND_{self.name.upper().replace('-', '_')}_GPUS"
        if not self.gpus:
            return f"gpus: backend {self.name} (docker) offers no GPUs ({setting} declares the host's)"
        return f"gpus: {asked} asked, and backend {self.name} (docker) has {self.gpus} ({setting})"

    def _never_root(self, spec: ContainerSpec) -> None:
        if 0 in spec.user:
            raise BackendRejected(self.name, "user", "tools never run as root (uid or gid 0)")

    async def validate(self, spec: ContainerSpec) -> None:
        self._never_root(spec)
        if spec.placement:
            raise BackendRejected(
                self.name, "placement", f"backend {self.name} (docker) runs every step on this host: no placement"
            )
        if spec.limits.gpus > self.gpus:
            raise BackendRejected(self.name, "gpus", self._gpu_problem(spec.limits.gpus))
        body = self.request(spec).model_dump(mode="json", exclude_none=True)
        size = len(json.dumps(body).encode())
        if size > MAX_BODY_BYTES - BODY_SLACK:
            raise BackendRejected(
                self.name,
                "env" if len(json.dumps(body.get("env") or {})) > len(json.dumps(body.get("cmd") or [])) else "cmd",
                f"its cmd and env make a request of {size} bytes, over the executor's limit of "
                f"{MAX_BODY_BYTES - BODY_SLACK}; pass large data through the input dataset instead",
                code="step_too_large",
            )
        try:
            await self._api.json("POST", "/containers/validate", body, timeout=30)
        except Refused as exc:
            raise BackendRejected(self.name, "step", exc.message) from None

    # -- one object ----------------------------------------------------------------------------------
    async def submit(self, spec: ContainerSpec) -> Handle:
        """An image the engine does not have (and cannot pull) makes no object: the handle's
        ``wait`` says ``image_unavailable``."""
        self._never_root(spec)
        if spec.limits.gpus > self.gpus:  # GPUS lowered since init: never a container without them
            raise BackendRejected(self.name, "gpus", self._gpu_problem(spec.limits.gpus))
        handle = Handle(backend=self.name, name=spec.name)
        if spec.image_id is not None and spec.image_id != await self.resolve_image(spec.image):
            # Asked for these bits and not others (the cache's key): this engine has something else.
            message = f"image {spec.image} is not {spec.image_id} on backend {self.name}"
            self._unavailable[spec.name] = End(kind=EndKind.IMAGE_UNAVAILABLE, message=message)
            return handle
        body = self.request(spec).model_dump(mode="json", exclude_none=True)
        try:
            answer = await self._api.json("POST", "/containers", body, timeout=SUBMIT_TIMEOUT)
        except Refused as exc:
            if exc.code == "image_not_found":
                self._unavailable[spec.name] = End(kind=EndKind.IMAGE_UNAVAILABLE, message=exc.message)
                return handle
            raise BackendRejected(self.name, "step", exc.message) from None
        self._unavailable.pop(spec.name, None)
        return handle.model_copy(update={"engine_id": self._state(answer).engine_id})

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        """Long-polls the executor, which enforces the timeout and the start timeout itself."""
        if (unavailable := self._unavailable.pop(handle.name, None)) is not None:
            return unavailable
        path = f"/containers/{handle.name}/wait?hold={HOLD:g}&tail={DEFAULT_LOG_LINES}"
        while True:
            try:
                answer = await self._api.json("GET", path, None, timeout=HOLD + 60)
            except Refused as exc:
                if exc.status != 404:
                    raise BackendUnavailable(f"backend {self.name}: {exc.message}") from None
                if handle.name in self._cancelled:
                    return End(kind=EndKind.CANCELLED, message="cancelled", engine_id=handle.engine_id)
                return End(
                    kind=EndKind.NODE_LOST,
                    message=f"container {handle.name} was removed from the Docker engine by someone else",
                    engine_id=handle.engine_id,
                )
            state = self._state(answer)
            if state.phase is Phase.ENDED:
                end = self._end(state)
                if end.kind in (EndKind.TIMED_OUT, EndKind.UNSCHEDULABLE):
                    await self.cancel(handle)  # the seam: ended by its limits is cancelled, nothing left
                return end

    def _end(self, state: ContainerState) -> End:
        kind = _ENDS.get(state.ending or Ending.FAILED, EndKind.FAILED)
        if kind is EndKind.FAILED and state.exit_code is None:
            kind = EndKind.LOST
        return End(
            kind=kind,
            exit_code=state.exit_code,
            message=state.message,
            node=state.node,
            engine_id=state.engine_id,
            image_id=state.image_id,
            queued_seconds=state.queued_seconds,
            run_seconds=state.run_seconds,
            started_at=state.started_at,
            ended_at=state.ended_at,
            log_tail=state.log_tail,
        )

    def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        return self._api.output(handle.name, follow, since)

    async def cancel(self, handle: Handle) -> None:
        self._cancelled[handle.name] = None
        while len(self._cancelled) > CANCELLED_MEMORY:
            self._cancelled.pop(next(iter(self._cancelled)))
        try:
            await self._api.json("DELETE", f"/containers/{handle.name}", None, timeout=60)
        except Refused as exc:
            if exc.status != 404:
                raise BackendUnavailable(f"backend {self.name}: {exc.message}") from None

    async def list_managed(self, instance: str) -> list[Managed]:
        answer = await self._api.json("GET", f"/containers?{urlencode({'instance': instance})}", None, timeout=30)
        try:
            found = ContainerList.model_validate(answer).containers
        except ValidationError as exc:
            raise BackendUnavailable(f"backend {self.name} answered an unexpected list: {exc}") from None
        return [
            Managed(
                handle=Handle(backend=self.name, name=c.name, engine_id=c.engine_id),
                labels=c.labels,
                running=c.phase is not Phase.ENDED,
            )
            for c in found
            if c.labels.get(INSTANCE_LABEL) == instance
        ]

    # -- answers ------------------------------------------------------------------------------------
    def _state(self, answer: dict[str, Any]) -> ContainerState:
        try:
            return ContainerState.model_validate(answer)
        except ValidationError as exc:
            raise BackendUnavailable(f"backend {self.name} answered an unexpected state: {exc}") from None
