"""One watch of a backend's Jobs and one of their pods, shared by every attempt (a thousand waiting
attempts cost two streams, not a thousand polls).

Each watch lists first (the cache is then complete), then watches from the list's resourceVersion and
renews the watch from the last version it saw when the server ends it; a version that is too old
(410 Gone) or a broken stream means listing again, after a short backoff when the API is down.
Waiters sleep on ``changed`` and look at the cache; a Job the cache has never seen (just created, or
the cache not yet listed) is asked for directly, at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .kube_api import KubeApi, WatchExpired
from .kube_pod import JOB_NAME_LABEL
from .kube_status import Job, Pod
from .seam import BackendUnavailable

log = logging.getLogger(__name__)

# Not retry.Backoff: hand-picked steps (2 -> 5 -> 10 is no doubling), kept so the relist waits do not change.
_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


class ClusterCache:
    def __init__(self, api: KubeApi, selector: str) -> None:
        self._api = api
        self._selector = selector
        self.jobs: dict[str, Job] = {}
        self.pods: dict[str, dict[str, Pod]] = {}  # job name -> pod name -> pod
        self.known: set[str] = set()  # Jobs the cache has held (gone from ``jobs``: deleted)
        self.pod_seen: set[str] = set()  # Jobs a pod was seen of
        self.synced = asyncio.Event()
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._asked: dict[str, float] = {}
        self._listed: set[str] = set()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run("jobs", self._put_job, self._drop_job), name="kube-watch-jobs"),
                asyncio.create_task(self._run("pods", self._put_pod, self._drop_pod), name="kube-watch-pods"),
            ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def changed(self, name: str, timeout: float) -> None:
        """Return at the next change of Job ``name`` or its pods (or a new listing), or after
        ``timeout`` seconds. Only that Job's waiters wake: a thousand waiters cost one wake-up per
        event, not a thousand."""
        event = self._events.setdefault(name, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    def _notify(self, name: str | None) -> None:
        if name is None:
            for each in self._events.values():
                each.set()
        elif (event := self._events.get(name)) is not None:
            event.set()

    # -- what waiters read -------------------------------------------------------------------------------

    def pod(self, job: str) -> Pod | None:
        pods = self.pods.get(job)
        if not pods:
            return None
        return max(pods.values(), key=lambda p: (p.metadata.creation_timestamp is not None, p.metadata.creation_timestamp))

    async def job(self, name: str) -> Job | None:
        """The Job, from the cache when it knows it, else from the API (at most once a second)."""
        found = self.jobs.get(name)
        if found is not None or (name in self.known and self.synced.is_set()):
            return found
        now = time.monotonic()
        if now - self._asked.get(name, 0.0) < 1.0:
            return self._pending(name)
        self._asked[name] = now
        if len(self._asked) > 10_000:
            self._asked = {k: v for k, v in self._asked.items() if now - v < 60}
        fetched = await self._api.get_job(name)
        if fetched is not None:
            self._put_job(fetched)
            self.known.add(name)
        return fetched

    def _pending(self, name: str) -> Job | None:
        """A Job asked for under a second ago and not in the cache: still taken to exist, unless the
        cache says it is gone."""
        return Job.model_validate({"metadata": {"name": name}}) if name not in self.known else None

    def forget(self, name: str) -> None:
        self._events.pop(name, None)
        self.jobs.pop(name, None)
        self.pods.pop(name, None)
        self.known.discard(name)
        self.pod_seen.discard(name)
        self._asked.pop(name, None)

    # -- the watches -----------------------------------------------------------------------------------

    def _put_job(self, job: Job) -> None:
        self.jobs[job.metadata.name] = job
        self.known.add(job.metadata.name)

    def _drop_job(self, name: str, _: str | None) -> None:
        self.jobs.pop(name, None)

    def _put_pod(self, pod: Pod) -> None:
        owner = pod.metadata.labels.get(JOB_NAME_LABEL)
        if owner is not None:
            self.pods.setdefault(owner, {})[pod.metadata.name] = pod
            self.pod_seen.add(owner)

    def _drop_pod(self, name: str, owner: str | None) -> None:
        if owner is not None and owner in self.pods:
            self.pods[owner].pop(name, None)

    async def _run(
        self, kind: str, put: Callable[[Any], None], drop: Callable[[str, str | None], None]
    ) -> None:
        model: type[Job] | type[Pod] = Job if kind == "jobs" else Pod
        failures = 0
        while True:
            try:
                items, version = await self._api.list_for_watch(kind, self._selector)
                parsed = [model.model_validate(item) for item in items]
                if kind == "jobs":
                    listed = {j.metadata.name for j in parsed}
                    for name in [n for n in self.jobs if n not in listed]:
                        drop(name, None)
                else:
                    self.pods.clear()
                for obj in parsed:
                    put(obj)
                self._listed.add(kind)
                if len(self._listed) == 2:
                    self.synced.set()
                self._notify(None)
                failures = 0
                while True:
                    async for event, raw in self._api.watch(kind, self._selector, version):
                        version = str((raw.get("metadata") or {}).get("resourceVersion", version))
                        if event == "BOOKMARK":
                            continue
                        try:
                            obj = model.model_validate(raw)
                        except ValidationError:
                            continue
                        if event == "DELETED":
                            drop(obj.metadata.name, obj.metadata.labels.get(JOB_NAME_LABEL))
                        else:
                            put(obj)
                        self._notify(obj.metadata.name if kind == "jobs" else obj.metadata.labels.get(JOB_NAME_LABEL))
            except WatchExpired:
                log.info("watch of %s expired; listing again", kind)
            except BackendUnavailable as exc:
                delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                log.warning("watch of %s: %s; listing again in %.1f s", kind, exc.message, delay)
                await asyncio.sleep(delay)
            except (ValidationError, KeyError, TypeError, AttributeError) as exc:
                # An answer of a shape the backend cannot read: said, and listed again (never a dead watch).
                log.warning("watch of %s: an answer the backend cannot read (%r); listing again", kind, exc)
                await asyncio.sleep(_BACKOFF[-1])
