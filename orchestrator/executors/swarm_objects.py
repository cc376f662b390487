"""What MAO leaves on a swarm, found and removed: services, their task containers (Swarm keeps a
finished job's containers after ``service rm``, moby#42789), and the listing for reconcile and sweep."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .engine_api import EngineApi, EngineConflict, EngineNotFound, filters
from .seam import INSTANCE_LABEL, MANAGED_LABEL, BackendUnavailable, Handle, Managed
from .swarm_watch import ENDED

SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


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

    async def remove(self, name: str, *, ended: bool = False) -> None:
        """Remove service ``name`` and its task containers; return once both are gone. Safe to repeat.

        A task that had not ended may still get its container from an agent as the service goes: then
        the engine must look clean twice, 0.2 s apart. An ended task makes no container any more."""
        try:
            await self._api.call("DELETE", self._api.path("/services/{}", name), f"removing service {name}")
        except EngineNotFound:
            pass
        deadline = time.monotonic() + self._remove_timeout
        clean, needed, removing = 0, 1 if ended else 2, 0
        while True:
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"backend {self._backend!r}: service {name} or its containers are still on the engine "
                    f"{self._remove_timeout:g}s after their removal; cancel again later"
                )
            if await self._remove_containers(name):
                removing += 1
                clean = 0
                if removing > 1:  # the first time, look again at once: a removal is done when it returns
                    await asyncio.sleep(0.2)
                continue
            removing = 0
            if await self.service(name) is None:
                clean += 1
                if clean >= needed:
                    return
            else:
                clean = 0
            await asyncio.sleep(0.2)

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
        tasks = tasks or []
        with_tasks = {str(t.get("ServiceID")) for t in tasks}
        active = {str(t.get("ServiceID")) for t in tasks if (t.get("Status") or {}).get("State") not in ENDED}
        found: list[Managed] = []
        names = set()
        for service in services or []:
            spec = service.get("Spec") or {}
            name, service_id = str(spec.get("Name")), str(service.get("ID"))
            names.add(name)
            found.append(
                Managed(
                    handle=Handle(backend=self._backend, name=name, engine_id=service_id),
                    labels=_mao_labels(spec.get("Labels")),
                    running=service_id in active or service_id not in with_tasks,
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
