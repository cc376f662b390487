"""What MAO leaves on a swarm, found and removed: services, their tasks and task containers, and the
listing for reconcile and sweep.

Docker 20.10's jobs need care here (moby#42789, moby#44312, fixed in swarmkit#3112 for Docker 23):
removing a job's service neither stops its task (a task still pending or starting gets its container
later; an unschedulable one would run the day a node matches) nor removes its containers.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

from .engine_api import EngineApi, EngineConflict, EngineNotFound, filters
from .seam import INSTANCE_LABEL, MANAGED_LABEL, BackendUnavailable, Handle, Managed
from .swarm_watch import ENDED, tasks_of

SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
# A job told to run nothing: Swarm moves its tasks to "remove" and shuts down the running one.
_NOTHING = {"ReplicatedJob": {"MaxConcurrent": 0, "TotalCompletions": 0}}


class SwarmObjects:
    def __init__(self, api: EngineApi, backend: str, *, remove_timeout: float) -> None:
        self._api = api
        self._backend = backend
        self._remove_timeout = remove_timeout

    async def service(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self._api.call(
                "GET", self._api.path("/services/{}", name), f"looking up service {name}"
            )
        except EngineNotFound:
            return None
        return dict(found)

    async def container(self, container_id: str | None) -> dict[str, Any] | None:
        """A task's container when it is on this engine's node (None: gone, or another node's)."""
        if not container_id:
            return None
        try:
            found = await self._api.call(
                "GET", self._api.path("/containers/{}/json", container_id), "inspecting a task's container"
            )
        except EngineNotFound:
            return None
        return dict(found)

    async def oom_recorded(self, container_id: str, since: datetime, until: datetime) -> bool:
        """Whether the engine logged an ``oom`` event for the container between ``since`` and ``until``
        (engine times). Docker 20.10 sets ``State.OOMKilled`` only when containerd reports the OOM
        before the exit; when the exit comes first, the flag stays false for ever, but the event is
        still logged. An ``until`` in the engine's future makes the engine answer at that time, with
        what came until then. The engine keeps its last 256 events: on a very busy engine an old one
        is gone (then False)."""
        params = {
            "since": f"{since.timestamp():.9f}",
            "until": f"{until.timestamp():.9f}",
            **filters(type=["container"], container=[container_id], event=["oom"]),
        }
        async with self._api.stream("/events", "reading the engine's events", params=params) as response:
            raw = await response.read()
        for line in raw.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("Action") == "oom":
                return True
        return False

    async def remove(self, name: str) -> None:
        """Remove service ``name``, its task and its containers; return once all are gone. Safe to
        repeat. The job is first told to run nothing, its containers are removed until no task of it
        is active any more, and only then the service goes."""
        service = await self.service(name)
        if service is not None:
            tasks = (await tasks_of(self._api, [str(service["ID"])])).get(str(service["ID"]), [])
            if not tasks or any((t.get("Status") or {}).get("State") not in ENDED for t in tasks):
                await self._run_nothing(service)  # an ended task starts nothing: no update needed
        deadline = time.monotonic() + self._remove_timeout
        while True:
            removed = await self._remove_containers(name)
            active = 0
            if service is not None:
                tasks = (await tasks_of(self._api, [str(service["ID"])])).get(str(service["ID"]), [])
                active = sum((t.get("Status") or {}).get("State") not in ENDED for t in tasks)
            if not removed and not active:
                break
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"backend {self._backend!r}: service {name} still has {active} active task(s) and "
                    f"{removed} container(s) {self._remove_timeout:g}s after its removal began; cancel again later"
                )
            if not removed:
                await asyncio.sleep(0.1)
        try:
            await self._api.call("DELETE", self._api.path("/services/{}", name), f"removing service {name}")
        except EngineNotFound:
            pass
        if await self._remove_containers(name) or await self.service(name) is not None:
            raise BackendUnavailable(
                f"backend {self._backend!r}: service {name} came back while it was removed"
            )

    async def _run_nothing(self, service: dict[str, Any]) -> None:
        spec = dict(service.get("Spec") or {})
        if spec.get("Mode") == _NOTHING:
            return
        spec["Mode"] = _NOTHING
        try:
            await self._api.call(
                "POST",
                self._api.path("/services/{}/update", str(service["ID"])),
                f"stopping the job {spec.get('Name')}",
                params={"version": str((service.get("Version") or {}).get("Index", ""))},
                body=spec,
            )
        except EngineNotFound:
            pass

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

    async def managed(self, instance: str) -> list[Managed]:
        """The instance's services (running: a task not ended yet, or none made yet), and task
        containers whose service is gone (removed from outside, or a crash mid-cancel)."""
        labels = [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={instance}"]
        services, containers = await asyncio.gather(
            self._api.call("GET", "/services", "listing MAO's services", params=filters(label=labels)),
            self._api.call(
                "GET",
                "/containers/json",
                "listing MAO's containers",
                params={"all": "1", **filters(label=labels)},
            ),
        )
        by_service = await tasks_of(self._api, [str(s.get("ID")) for s in services or []])
        found: list[Managed] = []
        names = set()
        for service in services or []:
            spec = service.get("Spec") or {}
            name, service_id = str(spec.get("Name")), str(service.get("ID"))
            names.add(name)
            tasks = by_service.get(service_id, [])
            running = not tasks or any((t.get("Status") or {}).get("State") not in ENDED for t in tasks)
            found.append(
                Managed(
                    handle=Handle(backend=self._backend, name=name, engine_id=service_id),
                    labels=_mao_labels(spec.get("Labels")),
                    running=running,
                )
            )
        for container in containers or []:
            labels_of = container.get("Labels") or {}
            name = str(labels_of.get(SERVICE_NAME_LABEL) or "")
            if name and name not in names:
                names.add(name)
                found.append(
                    Managed(
                        handle=Handle(backend=self._backend, name=name),
                        labels=_mao_labels(labels_of),
                        running=container.get("State") == "running",
                    )
                )
        return found


def _mao_labels(labels: object) -> dict[str, str]:
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items() if str(k).startswith("mao.")}
