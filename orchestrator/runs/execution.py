"""One attempt's object on its backend: the run engine's only door to the seam
(``executors/seam.py``) for running things, whatever the backend's kind.

``Execution.run(spec)`` registers the object as live (before it exists: a sweep never removes an
object being submitted), submits it (or adopts one a previous process submitted), has its log kept
(``log_keeper.py``), waits for its end and watches it meanwhile:
- stall: no output for ``stall_timeout`` seconds while its log stream is connected: removed, the
  end is ``stalled`` (the backend's own timeout and start timeout are its to enforce);
- watchdog: a backend that has not ended it ``WATCHDOG_SLACK`` after its timeout (counted from its
  start, or from the submission plus its start timeout while it has not started): removed, the end
  is ``timed_out``.
A backend that cannot be asked is asked again (the object is still there, or it is ``lost``).

After the end the object is retired off the attempt's path: its log completes, then the object is
removed from the engine. A cancelled attempt removes its object before the cancellation goes on;
at shutdown (``detaching``) objects stay for the next process to adopt. ``sweep`` removes every
object of this instance no attempt here is watching (ended or unknown runs, leftovers of a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import MaoError
from ..executors.backends import Backends
from ..executors.seam import (
    RUN_LABEL,
    Backend,
    BackendUnavailable,
    ContainerSpec,
    End,
    EndKind,
    Handle,
    SubmitEnded,
    secret_values,
)
from ..phases import phase
from ..retry import Backoff
from ..tasks import spawn
from .log_keeper import LogKeeper
from .step_logs import StepLogs

log = logging.getLogger(__name__)

DEFAULT_LOG_BYTES = 50 * 1024**2
WATCHDOG_SLACK = 120.0
STALL_CHECK = 1.0  # how often silence is compared with a stall timeout
WATCHDOG_CHECK = 10.0
REMOVE_TRIES = 3
# How long a cancelled attempt waits for a submission under way before it removes (or leaves) it.
SUBMIT_WAIT = 60.0


@dataclass(frozen=True)
class Outcome:
    """How an attempt's object ended, and the handle it had."""

    end: End
    handle: Handle


def where_it_ran(end: End | None) -> dict[str, Any]:
    """The attempt record's fields an object's end fills in (``RunRecords.end_attempt``)."""
    if end is None:
        return {}
    return {"engine_id": end.engine_id, "node": end.node, "queued_seconds": end.queued_seconds}


@dataclass
class _Live:
    run_id: str
    handle: Handle


class Execution:
    def __init__(self, backends: Backends, step_logs: StepLogs, instance: str) -> None:
        self.backends = backends
        self.step_logs = step_logs
        self.instance = instance
        self._live: dict[str, _Live] = {}  # object name -> whose it is and its handle
        self._retiring: set[asyncio.Task[Any]] = set()
        # Shutdown: cancelled attempts leave their objects running, for the next process to adopt.
        self.detaching = False

    # -- questions ----------------------------------------------------------------------------------
    def running(self) -> Counter[str]:
        """Live objects per backend name (submitted or adopted, not yet retired)."""
        return Counter(live.handle.backend for live in self._live.values())

    def claim(self, run_id: str, handle: Handle) -> None:
        """An object found after a restart that an attempt will adopt: the sweep leaves it alone."""
        self._live[handle.name] = _Live(run_id, handle)

    # -- one attempt --------------------------------------------------------------------------------
    async def run(self, spec: ContainerSpec, backend_name: str, adopted: Handle | None = None) -> Outcome:
        """Submit ``spec`` (or adopt ``adopted``) on its backend and wait for its end; raises
        MaoError when the backend refuses it (``BackendRejected``) or cannot be asked at submit."""
        backend = self.backends.get(backend_name)
        handle = adopted or Handle(backend=backend.name, name=spec.name)
        run_id = spec.identity.run
        self._live[spec.name] = _Live(run_id, handle)
        with phase("container/log keeper opened"):
            keeper = await self.step_logs.keeper(
                run_id, spec.name, secret_values(spec), spec.limits.log_bytes or DEFAULT_LOG_BYTES
            )
        removed = detached = False
        submitting: asyncio.Future[Handle] | None = None
        try:
            if adopted is None:
                # Shielded: a cancel that comes mid-submission waits for it (below), so the object is
                # either removed after it was made or, at shutdown, left whole for the next process.
                submitting = asyncio.ensure_future(backend.submit(spec))
                try:
                    with phase("container/submit (create, start)"):
                        handle = await asyncio.shield(submitting)
                except SubmitEnded as ended:
                    return Outcome(ended.end, handle)
                self._live[spec.name] = _Live(run_id, handle)
            keeper.follow(backend, handle)
            with phase("container/wait for its end"):
                end, removed = await self._watch(backend, handle, spec, keeper)
            if end.image_id is None and end.kind is EndKind.COMPLETED:
                # Provenance (MAO-Tool-Image) and the cache's key: the bits that ran, asked for only
                # when the backend's end does not say.
                with contextlib.suppress(MaoError), phase("container/resolve its image"):
                    end = end.model_copy(update={"image_id": await backend.resolve_image(spec.image)})
            return Outcome(end, handle)
        except asyncio.CancelledError:
            if submitting is not None and not submitting.done():
                await asyncio.shield(asyncio.wait({submitting}, timeout=SUBMIT_WAIT))
                submitting.add_done_callback(lambda f: f.cancelled() or f.exception())
            if self.detaching:
                detached = True
                self._live.pop(spec.name, None)
                await asyncio.shield(self.step_logs.forget_keeper(keeper))
                raise
            # Gone from the engine before the cancellation goes on (run cancel, a losing shard twin).
            await asyncio.shield(self._remove(backend, handle))
            removed = True
            raise
        except BaseException:
            removed = False  # submitted or not: the retirement removes whatever there is
            raise
        finally:
            if not detached:
                self._retire(backend, handle, keeper, removed)

    async def _watch(
        self, backend: Backend, handle: Handle, spec: ContainerSpec, keeper: LogKeeper
    ) -> tuple[End, bool]:
        """(the end, whether the object was removed here)."""
        waiting = asyncio.create_task(self._wait(backend, handle, spec), name=f"wait for {handle.name}")
        began = time.monotonic()
        try:
            while True:
                every = STALL_CHECK if spec.stall_timeout else WATCHDOG_CHECK
                done, _ = await asyncio.wait({waiting}, timeout=every)
                if done:
                    return waiting.result(), False
                now = time.monotonic()
                if spec.stall_timeout and keeper.silent_for(now) >= spec.stall_timeout:
                    await self._remove(backend, handle)
                    return End(kind=EndKind.STALLED, message=f"no output for {spec.stall_timeout:g} s"), True
                if keeper.started is not None:
                    limit = keeper.started + spec.timeout
                else:
                    limit = began + (spec.start_timeout or spec.timeout) + spec.timeout
                if now > limit + WATCHDOG_SLACK:
                    await self._remove(backend, handle)
                    message = (
                        f"timed out after {spec.timeout:g} s (backend {backend.name} did not end it: "
                        "the orchestrator's watchdog did)"
                    )
                    return End(kind=EndKind.TIMED_OUT, message=message), True
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)

    async def _wait(self, backend: Backend, handle: Handle, spec: ContainerSpec) -> End:
        backoff = Backoff(0.5, 10.0, jitter=False)  # this run's own wait: no herd to spread
        while True:
            try:
                return await backend.wait(handle, spec)
            except BackendUnavailable as exc:
                delay = backoff.next()
                log.warning("waiting for %s: %s; asking again in %.1f s", handle.name, exc.message, delay)
                await asyncio.sleep(delay)

    # -- after the end --------------------------------------------------------------------------------
    def _retire(self, backend: Backend, handle: Handle, keeper: LogKeeper, removed: bool) -> None:
        """Off the attempt's path: the log completes, then the object goes."""

        async def retire() -> None:
            keeper.ended()
            try:
                if removed:
                    await keeper.stop()
                else:
                    await keeper.close()
                    await self._remove(backend, handle)
            finally:
                if (live := self._live.get(handle.name)) is not None and live.handle.name == handle.name:
                    del self._live[handle.name]

        spawn(retire(), f"retire {handle.name}", self._retiring)

    async def _remove(self, backend: Backend, handle: Handle) -> bool:
        """Cancel the object (asked again while the backend is away, a few times: the sweep gets
        the rest); True once the backend said it is gone."""
        for attempt in range(REMOVE_TRIES):
            try:
                await backend.cancel(handle)
                return True
            except BackendUnavailable as exc:
                if attempt == REMOVE_TRIES - 1:
                    log.warning("%s was not removed (%s); the sweep removes it later", handle.name, exc.message)
                else:
                    await asyncio.sleep(0.5 * (attempt + 1))
            except MaoError as exc:
                log.warning("%s was not removed: %s", handle.name, exc.message)
                return False
        return False

    async def close(self) -> None:
        """Let retirements under way finish (their logs kept, their objects removed)."""
        if self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    # -- whole runs and the sweep ----------------------------------------------------------------------
    async def remove_run(self, run_id: str) -> list[str]:
        """Remove every object of the run on every backend, and check that none is left."""
        removed: list[str] = []
        for backend in self.backends:
            try:
                found = [
                    m for m in await backend.list_managed(self.instance) if m.labels.get(RUN_LABEL) == run_id
                ]
                for managed in found:
                    await backend.cancel(managed.handle)
                    removed.append(managed.handle.name)
                left = [
                    m.handle.name
                    for m in await backend.list_managed(self.instance)
                    if m.labels.get(RUN_LABEL) == run_id
                ]
                if left:
                    log.warning("run %s: %s still on backend %s after removal", run_id, ", ".join(left), backend.name)
            except MaoError as exc:
                log.warning(
                    "run %s: objects on backend %s not removed (%s); the sweep removes them later",
                    run_id, backend.name, exc.message,
                )  # fmt: skip
        return removed

    async def sweep(self) -> list[str]:
        """Remove every object of this instance that no attempt of this process watches: those
        of ended or unknown runs, and leftovers of a crash. Returns their names."""
        removed: list[str] = []
        for backend in self.backends:
            try:
                found = await backend.list_managed(self.instance)
            except MaoError as exc:
                log.info("sweep: backend %s not checked: %s", backend.name, exc.message)
                continue
            for managed in found:
                if managed.handle.name in self._live:
                    continue
                with contextlib.suppress(MaoError):
                    await backend.cancel(managed.handle)
                    removed.append(managed.handle.name)
        if removed:
            log.info("sweep: removed %d object(s) no attempt watches: %s", len(removed), ", ".join(removed))
        return removed
