"""Running containers from the event loop without ever blocking it.

Every DockerRunner call goes to a dedicated thread pool. Waiting for a container to exit gets its own pool,
sized to MAX_PARALLEL, so hour-long waits can never starve the short calls (kill, remove, health) that
must stay responsive — especially the kill that enforces a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from docker.models.containers import Container
from docker.types import Mount

from executor.config import Settings
from executor.docker_output import follow_output
from executor.docker_runner import ContainerSpec, DockerRunner
from executor.errors import DockerUnavailable, ImageNotFound
from executor.hardening import check_docker_socket, container_limits, mount_source, tool_user
from executor.output_log import DEFAULT_MAX_BYTES, LogBook, OutputLog
from executor.wire.errors import BadRequest, Conflict, Unavailable
from executor.wire.models import (
    INPUT_MOUNT,
    OUTPUT_MOUNT,
    RUN_LABEL,
    SOCKET_MOUNT,
    STEP_LABEL,
    ContainerFields,
    KillRequest,
    RunRequest,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Short calls only (inspect, create, start, kill, logs, remove, pull); enough that a few slow pulls
# cannot hold up the rest.
OPS_WORKERS = 16
# Slack over MAX_PARALLEL: after a timeout the abandoned wait() thread returns only once the kill lands,
# and the next container's wait must not queue behind it.
WAIT_SLACK = 2
HEALTH_TIMEOUT = 10.0
# How often a running container's silence is compared with its stall_timeout.
STALL_CHECK = 1.0
# How long a killed run's id is remembered, so that a /run for it arriving after the kill is refused.
KILLED_MEMORY = 600.0
# How long the output may take to be complete once its container exited (the follow drains, then the
# log is read again for what a follow that ended early missed: DockerRunner.follow_output). Generous:
# the full log is cut where this stops, and a loaded machine took over 15 s to hand over 430 KB of
# one-line writes.
DRAIN_TIMEOUT = 120.0


def _utcnow() -> str:
    return datetime.now(UTC).isoformat()


class RunService:
    """Runs containers for /run and answers /health; owns the thread pools and the parallelism bound."""

    def __init__(self, settings: Settings, runner: DockerRunner) -> None:
        self._settings = settings
        self._runner = runner
        self.runner = runner
        self._ops = ThreadPoolExecutor(max_workers=OPS_WORKERS, thread_name_prefix="docker-op")
        self.waits = ThreadPoolExecutor(
            max_workers=settings.max_parallel + WAIT_SLACK, thread_name_prefix="docker-wait"
        )
        # Output followers (stall detection, GET /containers/{name}/logs) live as long as their
        # containers: a pool of their own, with room for a follower that reconnects while the
        # dropped one has not noticed yet.
        self.followers = ThreadPoolExecutor(
            max_workers=2 * settings.max_parallel + 4 * WAIT_SLACK, thread_name_prefix="docker-logs"
        )
        self.slots = asyncio.Semaphore(settings.max_parallel)
        # (run, step or None) -> when it was killed; /run requests for these are refused.
        self._killed: dict[tuple[str, str | None], float] = {}
        # Removals that must finish even if the request that started them was cancelled.
        self._cleanups: set[asyncio.Future[Any]] = set()
        # Tasks now inside run(), so that shutdown can wait for them and then cancel them.
        self._active: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        # Each container's full output while it runs and until the orchestrator fetched it (GET /logs).
        self.logs = LogBook(settings.log_dir)

    def op(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._ops, functools.partial(fn, *args))

    # -- health and housekeeping -------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        # Bounded well below the client's 60 s read timeout: a health probe must answer promptly.
        try:
            await asyncio.wait_for(self.op(self._runner.ping), HEALTH_TIMEOUT)
            running = await asyncio.wait_for(self.op(self._runner.running_count), HEALTH_TIMEOUT)
        except TimeoutError:
            raise DockerUnavailable(
                f"the Docker engine did not answer within {HEALTH_TIMEOUT:.0f} s; check that dockerd is healthy"
            ) from None
        return {"status": "ok", "docker": "ok", "instance": self._settings.instance, "running": running}

    async def remove_leftovers(self) -> list[str]:
        return await self.op(self._runner.remove_leftovers)

    async def stop(self, grace: float) -> None:
        """Refuse new runs, give running ones ``grace`` seconds, then cancel them (which removes their containers).

        aiohttp's own shutdown would only cancel handlers after twice its timeout; doing it here keeps a
        SIGTERM prompt and predictable.
        """
        self._stopping = True
        if self._idle.is_set():
            return
        log.info("Waiting up to %.0f s for %d run(s) before killing their containers.", grace, len(self._active))
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            for task in list(self._active):
                task.cancel()
            try:
                await asyncio.wait_for(self._idle.wait(), 60)
            except TimeoutError:
                log.warning(
                    "%d run(s) did not finish cancelling; their containers may remain.", len(self._active)
                )

    async def close(self) -> None:
        """Let pending removals finish, then stop the thread pools."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self.op(self._runner.close)
        self._ops.shutdown(wait=False, cancel_futures=True)
        self.waits.shutdown(wait=False, cancel_futures=True)
        self.followers.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.logs.close)

    async def image_id(self, reference: str) -> str | None:
        return await self.op(self._runner.find_image, reference)

    # -- /kill ---------------------------------------------------------------------------------------------------

    async def kill(self, request: KillRequest) -> dict[str, Any]:
        """Remove the containers of a run (or of one of its steps) at once; later /run calls for it
        are refused, so a request still queued for a slot cannot start a container after the kill."""
        now = time.monotonic()
        self._killed = {k: t for k, t in self._killed.items() if now - t < KILLED_MEMORY}
        self._killed[(request.run, request.step)] = now
        labels = {RUN_LABEL: request.run, **({STEP_LABEL: request.step} if request.step else {})}
        removed = await self.op(self._runner.remove_labelled, labels)
        if removed:
            log.info("Killed and removed %s on request.", ", ".join(removed))
        return {"removed": removed}

    def _was_killed(self, request: RunRequest) -> bool:
        labels = request.labels or {}
        run = labels.get(RUN_LABEL)
        if run is None:
            return False
        return (run, None) in self._killed or (run, labels.get(STEP_LABEL)) in self._killed

    # -- /run ----------------------------------------------------------------------------------------------------

    async def run(self, request: RunRequest) -> dict[str, Any]:
        """Run one container to completion (or timeout) and describe how it ended."""
        if self._stopping:
            raise Unavailable(
                "the executor is shutting down; retry on another executor or later", code="executor_stopping"
            )
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        self._idle.clear()
        try:
            return await self._run(request)
        finally:
            self._active.discard(task)
            if not self._active:
                self._idle.set()

    async def _run(self, request: RunRequest) -> dict[str, Any]:
        check_docker_socket(request, self._settings)
        tool_user(request, self._settings.tool_uid, self._settings.tool_gid)
        output_dir, input_dir = await self.folders(request)
        image_id = await self.resolve_image(request.image)
        spec = await self.container_spec(request, output_dir, input_dir)
        # The slot is taken only after the cheap checks so a bad request fails fast even when all slots
        # are busy.
        # Opened before the slot is taken, so a follower asking for it while it waits finds it (empty).
        output = self.logs.open(spec.name, request.log_max_bytes or DEFAULT_MAX_BYTES)
        try:
            async with self.slots:
                if self._was_killed(request):
                    raise Conflict("this run was cancelled: its containers are not started", code="cancelled")
                return await self._run_container(spec, request, image_id, output)
        finally:
            output.end()

    async def mount_sources(self, request: ContainerFields) -> tuple[str, str | None]:
        """The resolved output and input folders, each below the data root (MountNotAllowed if not)."""
        # Resolving stats every component, which can hang on a dead network mount: the thread pool.
        return await self.op(self._mount_sources, request)

    async def folders(self, request: ContainerFields) -> tuple[str, str | None]:
        """``mount_sources``, each folder also checked to be a directory it may mount (BadRequest
        naming every problem): one thread hop for all of it."""
        return await self.op(self._folders, request)

    def _mount_sources(self, request: ContainerFields) -> tuple[str, str | None]:
        own = (self.logs.root,)
        output_dir = mount_source(request.output_dir, "output_dir", self._settings, own)
        input_dir = None
        if request.input_dir is not None:
            input_dir = mount_source(request.input_dir, "input_dir", self._settings, own)
        return output_dir, input_dir

    def _folders(self, request: ContainerFields) -> tuple[str, str | None]:
        output_dir, input_dir = self._mount_sources(request)
        problems = [DockerRunner.directory_problem(output_dir, "output_dir")]
        if input_dir is not None:
            problems.append(DockerRunner.directory_problem(input_dir, "input_dir"))
        found = [p for p in problems if p]
        if found:
            raise BadRequest("; ".join(found))
        return output_dir, input_dir

    async def resolve_image(self, reference: str) -> str:
        image_id = await self.op(self._runner.find_image, reference)
        if image_id is not None:
            return image_id
        if self._settings.pull == "never":
            raise ImageNotFound(
                f"image {reference!r} is not on this Docker engine and MAO_EXECUTOR_PULL=never forbids pulling "
                "it: load it on the executor's host (docker pull / docker load), or fix the reference"
            )
        limit = self._settings.pull_timeout
        log.info("Pulling image %s (up to %.0f s).", reference, limit)
        try:
            # The thread also stops at the deadline; the outer limit covers an engine that goes silent.
            return await asyncio.wait_for(
                self.op(self._runner.pull_image, reference, time.monotonic() + limit), limit + 5
            )
        except TimeoutError:
            raise ImageNotFound(
                f"image {reference!r} is not on this Docker engine and could not be pulled within {limit:.0f} s; "
                "load it on the executor's host (docker pull / docker load), or raise MAO_EXECUTOR_PULL_TIMEOUT"
            ) from None

    async def container_spec(self, request: ContainerFields, output_dir: str, input_dir: str | None) -> ContainerSpec:
        env = dict(request.env or {})
        user = tool_user(request, self._settings.tool_uid, self._settings.tool_gid)
        if "HOME" not in env:
            # An arbitrary uid has no passwd entry, so HOME would be '/', which it cannot write.
            env["HOME"] = "/tmp"
        mounts = [Mount(OUTPUT_MOUNT, output_dir, type="bind", read_only=False)]
        if input_dir is not None:
            mounts.append(Mount(INPUT_MOUNT, input_dir, type="bind", read_only=True))
        group_add: list[str] = []
        if request.docker_socket:
            mounts.append(Mount(SOCKET_MOUNT, self._settings.docker_socket, type="bind", read_only=False))
            # The tool is never root, so it reaches the socket through the socket's group.
            gid = await self.op(self._runner.docker_socket_gid)
            if gid is not None:
                group_add.append(str(gid))
        return ContainerSpec(
            image=request.image,
            name=request.name or f"mao-{self._settings.instance}-{uuid.uuid4().hex[:12]}",
            cmd=list(request.cmd) if request.cmd is not None else None,
            env=env,
            user=user,
            labels=dict(request.labels or {}),
            mounts=mounts,
            group_add=group_add,
            limits=container_limits(request),
        )

    async def _run_container(
        self, spec: ContainerSpec, request: RunRequest, image_id: str, output: OutputLog
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        creating = self.op(self._runner.create, spec)
        try:
            # Shielded: if the client goes away mid-create, the container still appears, and must go.
            container: Container = await asyncio.shield(creating)
        except asyncio.CancelledError:
            self._track(self._remove_once_created(creating, spec.name))
            raise

        try:
            started_at = _utcnow()
            began = time.monotonic()
            await self.op(self._runner.start, container)
            log.info("Container %s started from image %s.", spec.name, spec.image)
            exit_code: int | None = None
            timed_out = stalled = False
            last_output = [time.monotonic()]

            def sink(chunk: bytes) -> None:
                last_output[0] = time.monotonic()
                output.write(chunk)

            following = loop.run_in_executor(self.followers, follow_output, container, sink)
            following.add_done_callback(lambda f: f.cancelled() or f.exception())
            waiting = loop.run_in_executor(self.waits, self._runner.wait, container)
            try:
                exit_code, stalled = await self._wait(waiting, request, began, last_output)
            except TimeoutError:
                timed_out = True
                await self.op(self._runner.kill, container)
            if stalled:
                await self.op(self._runner.kill, container)
                exit_code = None
            # The follower returns once it has handed over everything the container wrote.
            await asyncio.wait({following}, timeout=DRAIN_TIMEOUT)
            output.end()
            duration = time.monotonic() - began
            ended_at = _utcnow()
            log_tail = await self._log_tail(container, request.log_lines)
            cancelled = self._was_killed(request)
            outcome = (
                f"timed out after {request.timeout:g} s"
                if timed_out
                else f"stalled: no output for {request.stall_timeout:g} s"
                if stalled
                else "cancelled"
                if cancelled
                else f"exit code {exit_code}"
            )
            log.info("Container %s ended: %s, %.1f s.", spec.name, outcome, duration)
            return {
                "exit_code": exit_code,
                "timed_out": timed_out,
                "stalled": stalled,
                "cancelled": cancelled,
                "image_id": image_id,
                "started_at": started_at,
                "ended_at": ended_at,
                "duration": round(duration, 3),
                "log_tail": log_tail,
                "container": spec.name,
            }
        except asyncio.CancelledError:
            log.info(
                "Container %s is being removed: the client went away or the executor is stopping.", spec.name
            )
            raise
        finally:
            # Shielded and tracked: a second cancellation (shutdown) must not leave the container behind.
            removal = self._track(self.op(self._runner.remove, spec.name))
            try:
                await asyncio.shield(removal)
            except Exception as exc:  # already failing or returning: report, do not mask the outcome
                log.warning("Container %s could not be removed: %s", spec.name, exc)

    async def _wait(
        self, waiting: asyncio.Future[int], request: RunRequest, began: float, last_output: list[float]
    ) -> tuple[int | None, bool]:
        """(exit code, False) when the container exits; (None, True) when it stalls; TimeoutError at
        its timeout. A stall is silence on stdout/stderr for ``stall_timeout`` seconds (``last_output``
        holds when the container last wrote, updated by its output follower)."""
        if request.stall_timeout is None:
            return await asyncio.wait_for(waiting, request.timeout), False
        deadline = began + request.timeout
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError
            silent_until = last_output[0] + request.stall_timeout
            if now >= silent_until:
                return None, True
            pause = min(STALL_CHECK, deadline - now, max(silent_until - now, 0.05))
            done, _ = await asyncio.wait({waiting}, timeout=pause)
            if done:
                return waiting.result(), False

    async def _log_tail(self, container: Container, lines: int) -> str:
        # The exit code is the result that matters; losing the logs must not lose it.
        try:
            return await self.op(self._runner.logs_tail, container, lines)
        except Exception as exc:
            log.warning("Logs of container %s could not be read: %s", container.name, exc)
            return ""

    async def _remove_once_created(self, creating: asyncio.Future[Container], name: str) -> None:
        try:
            await creating
        except Exception:  # the create failed, so there is nothing to remove
            return
        await self.op(self._runner.remove, name)

    def _track(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        future = asyncio.ensure_future(awaitable)
        self._cleanups.add(future)
        future.add_done_callback(self._cleanups.discard)
        # Retrieve the exception so an unawaited failed cleanup does not warn at garbage collection.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future
