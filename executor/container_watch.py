"""The monitor of each submitted container (``executor.containers``): it waits for a slot
(``MAO_EXECUTOR_MAX_PARALLEL``, shared with ``POST /run``), starts the container, and kills it at its
timeout (``mao.timeout``, counted from its start); one still waiting for a slot past its start timeout
(``mao.start-timeout``, counted from its creation) is never started and ends ``unschedulable``. What a
monitor learns beyond the engine is its container's ``Watch``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from docker.models.containers import Container

from executor.container_state import label_seconds, parse_time
from executor.docker_runner import DockerRunner
from executor.runs import RunService
from executor.wire.containers import START_TIMEOUT_LABEL, TIMEOUT_LABEL, Ending
from executor.wire.errors import BadRequest, MaoError

log = logging.getLogger(__name__)


@dataclass
class Watch:
    """What this process knows of one submitted container beyond the engine: its monitor, whether
    it started, and the end the monitor chose (timeout, unschedulable, cancel)."""

    name: str
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the container has exited (or was not started): a wait answers then, without waiting
    # for the monitor's own bookkeeping (``Containers._ended``).
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    ending: Ending | None = None
    message: str = ""
    task: asyncio.Task[None] | None = None
    # The engine's description of it once its wait returned, read once for every waiter and the
    # monitor's own count; used only when it shows the container exited (or dead), which no
    # longer changes: one being removed (from outside) shows "running" or "removing" until it is
    # gone, and is asked again.
    final: asyncio.Future[dict[str, Any] | None] | None = None


@dataclass(frozen=True)
class Started:
    """A container this process has just started, and what its monitor needs of it: known without
    asking the engine, whose inspection of a short container waits until its exit is processed."""

    container: Container
    timeout: float
    started: datetime


class Monitors:
    """One monitor task per watched container; ``watches`` and ``removing`` are the ``Containers``'
    own (what it knows of each container, and the names being removed on request), and ``ended``
    its bookkeeping of an end (counted and logged)."""

    def __init__(
        self,
        runner: DockerRunner,
        service: RunService,
        watches: dict[str, Watch],
        removing: set[str],
        ended: Callable[[Watch], Awaitable[None]],
    ) -> None:
        self._runner = runner
        self._service = service
        self.watches = watches
        self.removing = removing
        self.ended = ended

    def watch(
        self,
        name: str,
        *,
        started: bool,
        holding: bool = False,
        watch: Watch | None = None,
        known: Started | None = None,
    ) -> None:
        watch = watch or self.watches.get(name) or Watch(name)
        self.watches[name] = watch
        if started:
            watch.started.set()
        if watch.task is None or watch.task.done():
            watch.task = asyncio.create_task(self._monitor(watch, holding, known), name=f"monitor {name}")

    async def _monitor(self, watch: Watch, holding: bool, known: Started | None = None) -> None:
        """``known``: the container was started by this process's submit (holding its slot)."""
        name = watch.name
        try:
            if known is None:
                container = await self._service.op(self._runner.container, name)
                if container is None:
                    return
                attrs = container.attrs or {}
                labels = (attrs.get("Config") or {}).get("Labels") or {}
                timeout = label_seconds(labels, TIMEOUT_LABEL) or 3600.0
                if not watch.started.is_set():
                    container = await self._start_when_free(watch, attrs, labels)
                    holding = container is not None
                    started = datetime.now(UTC)
                else:
                    if not holding and not self._service.slots.locked():
                        await self._service.slots.acquire()  # adopted while running: it takes its slot
                        holding = True
                    started = parse_time((attrs.get("State") or {}).get("StartedAt")) or datetime.now(UTC)
                if container is not None:
                    known = Started(container, timeout, started)
            if known is not None:
                try:
                    await self._run_out(watch, known)
                finally:
                    if holding:
                        self._service.slots.release()
                watch.final = self._service.op(self._runner.inspect, name)
                watch.final.add_done_callback(lambda f: f.cancelled() or f.exception())
        except MaoError as exc:
            log.warning("Watching container %s stopped: %s", name, exc.message)
        # Not when cancelled: this executor is stopping, and the container goes on without it.
        watch.exited.set()
        await self.ended(watch)

    async def _start_when_free(
        self, watch: Watch, attrs: dict[str, Any], labels: dict[str, str]
    ) -> Container | None:
        """Wait for a slot (until the start timeout) and start the container; the container once
        it runs (holding its slot), None when it was not started."""
        name = watch.name
        start_timeout = label_seconds(labels, START_TIMEOUT_LABEL)
        remaining = None
        if start_timeout is not None:
            created = parse_time(attrs.get("Created")) or datetime.now(UTC)
            remaining = max(0.0, start_timeout - (datetime.now(UTC) - created).total_seconds())
        try:
            await asyncio.wait_for(self._service.slots.acquire(), remaining)
        except TimeoutError:
            watch.ending = Ending.UNSCHEDULABLE
            watch.message = f"no slot within its start_timeout of {start_timeout:g} s (MAO_EXECUTOR_MAX_PARALLEL)"
            log.info("Container %s was not started: %s.", name, watch.message)
            return None
        container = await self._service.op(self._runner.container, name)
        if container is None:
            self._service.slots.release()
            return None
        try:
            await self._service.op(self._runner.start, container)
        except BadRequest as exc:
            self._service.slots.release()
            watch.ending, watch.message = Ending.FAILED, exc.message
            return None
        except BaseException:
            self._service.slots.release()
            raise
        watch.started.set()
        log.info("Container %s started (its slot came free).", name)
        return container

    async def _run_out(self, watch: Watch, known: Started) -> None:
        """Until the container exits; killed at its timeout after its start."""
        name, container, timeout = watch.name, known.container, known.timeout
        remaining = max(0.0, timeout - (datetime.now(UTC) - known.started).total_seconds())
        waiting = asyncio.get_running_loop().run_in_executor(self._service.waits, self._runner.wait, container)
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.wait_for(asyncio.shield(waiting), remaining)
        except TimeoutError:
            watch.ending = Ending.TIMED_OUT
            watch.message = f"timed out after {timeout:g} s"
            await self._service.op(self._runner.kill, container)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(waiting), 30)
            log.info("Container %s killed: %s.", name, watch.message)
        except MaoError:
            if name not in self.removing:
                raise
