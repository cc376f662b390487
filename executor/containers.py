"""Submitted containers (``/containers``, executor/wire/containers.py): created by one request,
waited for by others, removed on request. They outlive the request that created them, the
orchestrator that asked (a SIGKILL included) and this executor process: everything the executor
needs to watch one again is on the engine (the container's state and its labels), so at start it
adopts every container it submitted before (``adopt``).

Each container has a monitor task (``executor.container_watch``): it starts the container when a
slot is free and kills it at its timeout, or ends it ``unschedulable``. How a container ended is
read from the engine (exit code, ``State.OOMKilled``) plus what its monitor
did; the orchestrator removes it (``DELETE``) once it has read its end and its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from docker.models.containers import Container

from executor.config import Settings
from executor.container_state import ENDED_STATES, describe, label_seconds
from executor.container_watch import Monitors, Started, Watch
from executor.docker_runner import DockerRunner
from executor.errors import ContainerNameInUse
from executor.hardening import check_docker_socket, tool_user
from executor.runs import RunService
from executor.wire.containers import (
    EXECUTOR_LABEL,
    START_TIMEOUT_LABEL,
    TIMEOUT_LABEL,
    ContainerState,
    Ending,
    Phase,
    SubmitRequest,
)
from executor.wire.errors import MaoError, NotFound, Unavailable

log = logging.getLogger(__name__)

# A removal is checked until the engine no longer knows the container, at most this long.
REMOVE_CHECK = 30.0


class Containers:
    """The /containers API's work; shares the thread pools and slots of ``RunService``."""

    def __init__(self, settings: Settings, runner: DockerRunner, service: RunService) -> None:
        self._settings = settings
        self._runner = runner
        self._service = service
        self._watches: dict[str, Watch] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._removing: set[str] = set()
        self._monitors = Monitors(runner, service, self._watches, self._removing, self._ended)
        self._node: str | None = None
        # How a container ended and the seconds from its submission to its end (None: not known).
        self.on_end: Callable[[Ending, float | None], None] = lambda _ending, _seconds: None

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def node(self) -> str:
        if self._node is None:
            try:
                self._node = await self._service.op(self._runner.node_name)
            except MaoError:
                return socket.gethostname()
        return self._node

    # -- start and stop ------------------------------------------------------------------------------
    async def adopt(self) -> list[str]:
        """Watch again every container this executor submitted before it (re)started: the running
        ones first (they hold slots), then those waiting for one, in the order they were created."""
        found = await self._service.op(self._runner.list_submitted)
        order = {"running": 0, "created": 1}
        adopted = []
        for summary in sorted(found, key=lambda c: (order.get(str(c.get("State")), 2), c.get("Created", 0))):
            name = str((summary.get("Names") or ["?"])[0]).lstrip("/")
            state = str(summary.get("State"))
            if state not in order:
                continue  # ended: nothing to watch, its end is read from the engine
            self._monitors.watch(name, started=state == "running")
            adopted.append(name)
        return adopted

    async def close(self) -> None:
        """Stop watching (the containers go on; the next start adopts them)."""
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- submit ----------------------------------------------------------------------------------------
    async def submit(self, request: SubmitRequest) -> ContainerState:
        """Create the container (idempotent by name) and start it when a slot is free; never waits
        for a slot. Shielded: a client that hangs up mid-create still gets a whole container (which
        it removes by name), never half of one."""
        return await asyncio.shield(self._submit(request))

    async def _submit(self, request: SubmitRequest) -> ContainerState:
        async with self._lock(request.name):
            # The checks and the image lookup go beside the look for an existing container (each a
            # thread hop, the lookups a round trip to the engine); they count only when there is none.
            checking = asyncio.ensure_future(self._checked(request))
            try:
                existing = await self._service.op(self._runner.inspect, request.name)
            except BaseException:
                self._discard(checking)
                raise
            if existing is not None:
                self._discard(checking)
                labels = (existing.get("Config") or {}).get("Labels") or {}
                if labels.get(EXECUTOR_LABEL) != self._settings.instance:
                    raise ContainerNameInUse(
                        f"a container named {request.name!r} exists on this Docker engine but was not "
                        "submitted by this executor: remove it, or choose another name"
                    )
                state = await self._state(request.name, existing)
                if request.name not in self._watches and state.phase is not Phase.ENDED:
                    self._monitors.watch(request.name, started=state.phase is Phase.RUNNING)
                return state
            output_dir, input_dir, found = await checking
            # Not on the engine: pulled, or refused, as its policy says.
            image_id = found or await self._service.resolve_image(request.image)
            spec = await self._service.container_spec(request, output_dir, input_dir)
            spec.labels.update(
                {
                    EXECUTOR_LABEL: self._settings.instance,
                    TIMEOUT_LABEL: f"{request.timeout:g}",
                    **({START_TIMEOUT_LABEL: f"{request.start_timeout:g}"} if request.start_timeout else {}),
                }
            )
            container: Container = await self._service.op(self._runner.create, spec)
            created = datetime.now(UTC)
            watch = Watch(request.name)
            self._watches[request.name] = watch
            # Started here when a slot is free, so the answer says "running" and a short step
            # costs no extra hop; otherwise the monitor starts it when its turn comes.
            started: Started | None = None
            if not self._service.slots.locked():
                await self._service.slots.acquire()
                try:
                    await self._service.op(self._runner.start, container)
                    # The timeout as its label says it (what an adopting process reads back).
                    timeout = label_seconds(spec.labels, TIMEOUT_LABEL) or request.timeout
                    started = Started(container, timeout, datetime.now(UTC))
                    watch.started.set()
                except BaseException:
                    self._service.slots.release()
                    await self._service.op(self._runner.remove, request.name)
                    self._watches.pop(request.name, None)
                    raise
            log.info(
                "Container %s submitted from image %s (%s).",
                request.name, request.image, "started" if started else "waiting for a slot",
            )  # fmt: skip
            self._monitors.watch(request.name, started=started is not None, holding=started is not None, watch=watch, known=started)  # fmt: skip
            # Answered from what this process just did, not from an inspection: the engine answers
            # one of a short container only once its exit is processed (~50 ms here), which would
            # hold the answer, and the wait that follows it, that long.
            made = {
                "Id": container.id,
                "Image": image_id,
                "Config": {"Labels": (container.attrs.get("Config") or {}).get("Labels") or {}},
                "Created": created.isoformat(),
                "State": {
                    "Status": "running" if started is not None else "created",
                    "StartedAt": started.started.isoformat() if started is not None else "",
                },
            }
            return describe(request.name, made, now=datetime.now(UTC), node=await self.node(), monitored=True)

    async def _checked(self, request: SubmitRequest) -> tuple[str, str | None, str | None]:
        """The request's checks (hardening, folders) and its image's id on the engine (None: not
        there; never pulled here, before it is known that no container exists)."""
        check_docker_socket(request, self._settings)
        tool_user(request, self._settings.tool_uid, self._settings.tool_gid)
        looking = asyncio.ensure_future(self._service.op(self._runner.find_image, request.image))
        try:
            output_dir, input_dir = await self._service.folders(request)
            image_id = await looking
        except BaseException:
            self._discard(looking)
            raise
        return output_dir, input_dir, image_id

    @staticmethod
    def _discard(future: asyncio.Future[Any]) -> None:
        """Cancel work whose answer no longer counts; its failure is nobody's to report."""
        future.cancel()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _ended(self, watch: Watch) -> None:
        """Count and log how the container ended (a removed one: as its monitor saw it)."""
        ending, message, seconds = watch.ending, watch.message, None
        with contextlib.suppress(MaoError):
            state = await self._state(watch.name)
            ending, message = state.ending, state.message
            if state.run_seconds is not None:
                seconds = (state.queued_seconds or 0.0) + state.run_seconds
        if ending is not None:
            self.on_end(ending, seconds)
            log.info("Container %s ended: %s%s.", watch.name, ending, f" ({message})" if message else "")

    # -- reading ---------------------------------------------------------------------------------------
    async def state(self, name: str, tail: int = 0) -> ContainerState:
        """The container as it is now; NotFound when the engine does not know it (or it is not one
        this executor submitted)."""
        state = await self._state(name, tail=tail)
        if name not in self._watches and state.phase is not Phase.ENDED:
            self._monitors.watch(name, started=state.phase is Phase.RUNNING)  # adopted late (never, normally)
        return state

    async def _state(self, name: str, attrs: dict[str, Any] | None = None, tail: int = 0) -> ContainerState:
        watch = self._watches.get(name)
        tailing = None
        if tail and attrs is None and watch is not None and watch.exited.is_set():
            # It has exited: its tail is read beside its inspection, not after it.
            tailing = asyncio.ensure_future(self._tail(name, tail))
            tailing.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            attrs = attrs or await self._inspect(name)
            labels = ((attrs or {}).get("Config") or {}).get("Labels") or {}
            if attrs is None or labels.get(EXECUTOR_LABEL) != self._settings.instance:
                raise NotFound(f"no container {name!r} submitted to this executor", code="container_not_found")
            watch = self._watches.get(name)
            state = describe(
                name,
                attrs,
                now=datetime.now(UTC),
                node=await self.node(),
                ending=watch.ending if watch is not None else None,
                message=watch.message if watch is not None else "",
                monitored=watch is not None and watch.task is not None and not watch.task.done(),
            )
            if tail and state.phase is Phase.ENDED:
                log_tail = await (tailing or self._tail(name, tail))
                state = state.model_copy(update={"log_tail": log_tail})
            return state
        finally:
            if tailing is not None and not tailing.done():
                tailing.cancel()

    async def _inspect(self, name: str) -> dict[str, Any] | None:
        watch = self._watches.get(name)
        if watch is not None and watch.final is not None:
            with contextlib.suppress(MaoError):  # the engine was away then: ask it again
                attrs = await asyncio.shield(watch.final)
                if attrs is not None and str((attrs.get("State") or {}).get("Status")) in ENDED_STATES:
                    return attrs
        return await self._service.op(self._runner.inspect, name)

    async def _tail(self, name: str, lines: int) -> str:
        try:
            return await self._service.op(self._runner.logs_tail, name, lines)
        except MaoError:
            return ""

    @staticmethod
    def _monitored(watch: Watch) -> bool:
        return watch.task is not None and not watch.task.done()

    async def wait(self, name: str, hold: float, tail: int) -> ContainerState:
        """The container's state once it has ended, or after ``hold`` seconds if it has not."""
        watch = self._watches.get(name)
        if watch is None or not (watch.exited.is_set() or self._monitored(watch)):
            # Not watched here (ended before this process, or never ours): the engine alone says.
            state = await self.state(name)
            if state.phase is Phase.ENDED:
                return await self._state(name, tail=tail) if tail else state
            watch = self._watches.get(name)
        # Watched: it is this executor's (submitted or adopted, by its label), so nothing is asked
        # of the engine until it has exited or the hold is over; a container removed meanwhile
        # ends its monitor, and the inspection below answers NotFound.
        if watch is not None and watch.task is not None and self._monitored(watch) and not watch.exited.is_set():
            exited = asyncio.ensure_future(watch.exited.wait())
            try:
                await asyncio.wait({watch.task, exited}, timeout=hold, return_when=asyncio.FIRST_COMPLETED)
            finally:
                exited.cancel()
        return await self._state(name, tail=tail)

    async def listing(self, instance: str | None) -> list[ContainerState]:
        """Every container this executor submitted (of ``instance`` when given), from the engine's
        summaries: phase and labels (times and ends: ``state``)."""
        labels = {"mao.instance": instance} if instance else None
        found = await self._service.op(self._runner.list_submitted, labels)
        node = await self.node()
        result = []
        for summary in found:
            name = str((summary.get("Names") or ["?"])[0]).lstrip("/")
            engine_state = str(summary.get("State"))
            phase = {"created": Phase.QUEUED, "exited": Phase.ENDED, "dead": Phase.ENDED}.get(engine_state, Phase.RUNNING)
            result.append(
                ContainerState(
                    name=name, engine_id=str(summary.get("Id") or ""), phase=phase, node=node,
                    labels=dict(summary.get("Labels") or {}),
                )  # fmt: skip
            )
        return result

    async def ready(self, name: str, follow: bool) -> None:
        """Before a log answer starts: NotFound for an unknown container; a follower of one still
        waiting for its slot waits until it started (or ended without starting)."""
        watch = self._watches.get(name)
        if watch is None or not self._monitored(watch):
            # A watched one is this executor's (see ``wait``): no need to ask the engine.
            await self._state(name)
            watch = self._watches.get(name)
        if follow and watch is not None and not watch.started.is_set() and watch.task is not None:
            started = asyncio.ensure_future(watch.started.wait())
            await asyncio.wait({started, watch.task}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()

    # -- remove ----------------------------------------------------------------------------------------
    async def remove(self, name: str) -> bool:
        """Kill and remove the container; returns once the engine no longer knows it. False when
        there was nothing of that name to remove. Safe to repeat."""
        try:
            return await self._remove(name)
        finally:
            self._forget(name)

    async def _remove(self, name: str) -> bool:
        async with self._lock(name):
            attrs = await self._service.op(self._runner.inspect, name)
            if attrs is None:
                return False
            labels = (attrs.get("Config") or {}).get("Labels") or {}
            if labels.get(EXECUTOR_LABEL) != self._settings.instance:
                raise NotFound(f"no container {name!r} submitted to this executor", code="container_not_found")
            self._removing.add(name)
            watch = self._watches.get(name)
            if watch is not None and watch.ending is None and watch.task is not None and not watch.task.done():
                watch.ending, watch.message = Ending.CANCELLED, "removed on request"
            try:
                await self._service.op(self._runner.remove, name)
                deadline = time.monotonic() + REMOVE_CHECK
                while await self._service.op(self._runner.inspect, name) is not None:
                    if time.monotonic() > deadline:
                        raise Unavailable(
                            f"container {name} is still on the Docker engine {REMOVE_CHECK:.0f} s after its "
                            "removal; ask again",
                            code="container_not_removed",
                        )
                    await asyncio.sleep(0.2)
            finally:
                self._removing.discard(name)
            if watch is not None and watch.task is not None:
                await asyncio.wait({watch.task}, timeout=5)
            log.info("Container %s removed on request.", name)
            return True

    def _forget(self, name: str) -> None:
        watch = self._watches.pop(name, None)
        if watch is not None and watch.task is not None and not watch.task.done():
            watch.task.cancel()
        self._locks.pop(name, None)
