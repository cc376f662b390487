"""One look at the swarm per interval for every attempt being waited on or followed.

Polling per attempt would cost the manager a request per attempt per interval (a fan-out of 200 shards:
800 requests a second at 0.25 s). Instead ``SwarmWatch`` asks three questions per round, whatever the
number of attempts: MAO's services, the tasks of those someone waits on, and the nodes; every waiter
reads the same ``Round``. The watch runs only while someone is interested.

``task_end`` reads a finished task (pure, tested without an engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .engine_api import EngineApi, EngineNotFound, filters
from .seam import MANAGED_LABEL, BackendUnavailable, EndKind

log = logging.getLogger(__name__)

# Task states (swarmkit's own words, not a run's): before the container runs, while, and after.
TASK_RUNNING = "running"
TASK_FAILED = "failed"
WAITING = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"})
ENDED = frozenset({"complete", TASK_FAILED, "rejected", "shutdown", "orphaned", "remove"})
_IMAGE_TROUBLE = re.compile(
    r"no such image|pull access denied|manifest unknown|manifest for .* not found|repository does not exist"
    r"|error pulling image|unauthorized|toomanyrequests|failed to resolve reference",
    re.IGNORECASE,
)
_MISSING_BIND = re.compile(r"bind source path does not exist|invalid mount config", re.IGNORECASE)


def parse_time(value: object) -> datetime | None:
    """A Docker timestamp (nanoseconds, 'Z'), or None for the zero time and anything unreadable."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = re.match(r"\d*", rest)
        fraction = digits.group(0) if digits else ""
        text = f"{head}.{fraction[:6].ljust(6, '0')}{rest[len(fraction) :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ServiceView:
    """One MAO service in one round: the service and its newest task (None before Swarm made one)."""

    service_id: str
    name: str
    labels: dict[str, str]
    created_at: datetime | None
    task: dict[str, Any] | None
    image: str | None = None  # as the service names it: the id or digest every node runs

    @property
    def state(self) -> str:
        if self.task is None:
            return "new"
        return str((self.task.get("Status") or {}).get("State") or "new")

    @property
    def status(self) -> dict[str, Any]:
        return dict((self.task or {}).get("Status") or {})

    @property
    def node_id(self) -> str | None:
        node = (self.task or {}).get("NodeID")
        return str(node) if node else None

    @property
    def state_since(self) -> datetime | None:
        return parse_time(self.status.get("Timestamp"))

    @property
    def container_id(self) -> str | None:
        container = (self.status.get("ContainerStatus") or {}).get("ContainerID")
        return str(container) if container else None

    @property
    def exit_code(self) -> int | None:
        status = self.status.get("ContainerStatus") or {}
        return int(status["ExitCode"]) if "ExitCode" in status and self.container_id else None

    @property
    def reason(self) -> str:
        """What the engine says about the task's state, in its words."""
        return str(self.status.get("Err") or self.status.get("Message") or self.state)


@dataclass(frozen=True)
class NodeView:
    hostname: str
    state: str  # ready, down, disconnected, unknown
    availability: str  # active, pause, drain


@dataclass(frozen=True)
class Round:
    number: int
    begun: float = 0.0  # monotonic time the look began: it shows nothing made after that
    services: dict[str, ServiceView] = field(default_factory=dict)
    nodes: dict[str, NodeView] = field(default_factory=dict)
    error: BackendUnavailable | None = None


def _newest(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    def key(task: dict[str, Any]) -> tuple[datetime, int]:
        created = parse_time(task.get("CreatedAt")) or datetime.min.replace(tzinfo=UTC)
        return created, int((task.get("Version") or {}).get("Index") or 0)

    return max(tasks, key=key) if tasks else None


async def tasks_of(api: EngineApi, service_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The tasks of these services, by service id. Asked by service, never by label: Docker 20.10
    keeps a removed job's task records for ever (moby#44312), so a label would list every task MAO
    ever ran."""
    if not service_ids:
        return {}
    try:
        tasks = await api.call("GET", "/tasks", "listing tasks", params=filters(service=service_ids))
    except EngineNotFound:
        # One of them was removed meanwhile, which fails the whole question: ask one by one.
        found = (
            await asyncio.gather(*(tasks_of(api, [one]) for one in service_ids))
            if len(service_ids) > 1
            else []
        )
        return {key: value for part in found for key, value in part.items()}
    by_service: dict[str, list[dict[str, Any]]] = {}
    for task in tasks or []:
        by_service.setdefault(str(task.get("ServiceID")), []).append(task)
    return by_service


class SwarmWatch:
    """Polls the services of interest, their tasks and the nodes every ``interval`` seconds while
    anyone is interested in one."""

    def __init__(self, api: EngineApi, interval: float) -> None:
        self._api = api
        self._interval = interval
        self._names: Counter[str] = Counter()
        self._round = Round(0)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def interest(self, name: str) -> Iterator[None]:
        """While inside, rounds keep coming, and show service ``name``."""
        self._names[name] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="swarm-watch")
        try:
            yield
        finally:
            self._names[name] -= 1
            if self._names[name] <= 0:
                del self._names[name]

    async def after(self, number: int, begun_after: float = 0.0) -> Round:
        """The first round newer than ``number`` whose look began after ``begun_after`` (monotonic: a
        waiter that just submitted must not read a look taken before its service existed); raises
        BackendUnavailable when that round could not ask the engine."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._round.number > number and self._round.begun >= begun_after
            )
            current = self._round
        if current.error is not None:
            raise current.error
        return current

    def node_name(self, node_id: str | None) -> str | None:
        """The hostname of node ``node_id`` as last seen (its id when unknown)."""
        if not node_id:
            return None
        node = self._round.nodes.get(node_id)
        return node.hostname if node is not None else node_id

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self._names:
            started = time.monotonic()
            number = self._round.number + 1
            try:
                current = await self._look(number, started, set(self._names))
            except BackendUnavailable as exc:
                current = Round(number, started, error=exc)
            except Exception as exc:  # noqa: BLE001 - a waiter must hear of any failure, not hang
                log.exception("The swarm watch failed")
                current = Round(number, started, error=BackendUnavailable(f"the swarm watch failed: {exc}"))
            async with self._changed:
                self._round = current
                self._changed.notify_all()
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    async def _look(self, number: int, begun: float, names: set[str]) -> Round:
        services, nodes = await asyncio.gather(
            self._api.call(
                "GET", "/services", "listing MAO's services", params=filters(label=[f"{MANAGED_LABEL}=true"])
            ),
            self._api.call("GET", "/nodes", "listing the swarm's nodes"),
        )
        wanted = [s for s in services or [] if (s.get("Spec") or {}).get("Name") in names]
        by_service = await tasks_of(self._api, [str(s.get("ID")) for s in wanted])
        views = {}
        for service in wanted:
            spec = service.get("Spec") or {}
            name = str(spec.get("Name") or "")
            views[name] = ServiceView(
                service_id=str(service.get("ID")),
                name=name,
                labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
                created_at=parse_time(service.get("CreatedAt")),
                task=_newest(by_service.get(str(service.get("ID")), [])),
                image=((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image"),
            )
        node_views = {
            str(node.get("ID")): NodeView(
                hostname=str((node.get("Description") or {}).get("Hostname") or node.get("ID")),
                state=str((node.get("Status") or {}).get("State") or "unknown"),
                availability=str((node.get("Spec") or {}).get("Availability") or "active"),
            )
            for node in nodes or []
        }
        return Round(number, begun, views, node_views)


def task_end(view: ServiceView) -> tuple[EndKind, int | None, str]:
    """How an ended task ended, from the engine's words alone: (kind, exit code, one sentence).

    An exit of 137 is ``failed`` here; whether it was the kernel's OOM killer needs the container
    (``SwarmBackend`` asks when it can)."""
    state, reason, code = view.state, view.reason, view.exit_code
    if state == "complete":
        return EndKind.COMPLETED, 0, "the tool exited 0"
    if state == TASK_FAILED:
        if view.container_id is None:
            return EndKind.FAILED, None, f"the container did not start: {reason}"
        return EndKind.FAILED, code, f"the tool exited {code}"
    if state == "rejected":
        if _IMAGE_TROUBLE.search(reason):
            return EndKind.IMAGE_UNAVAILABLE, None, f"the node could not get the image: {reason}"
        if _MISSING_BIND.search(reason):
            return (
                EndKind.NODE_LOST,
                None,
                f"the node could not bind the staged folders (is the shared root mounted there?): {reason}",
            )
        return EndKind.FAILED, None, f"the engine rejected the container: {reason}"
    if state == "orphaned":
        return EndKind.NODE_LOST, None, f"the task's node stopped answering the managers: {reason}"
    # shutdown, remove: not ours (our own cancel is known to the backend before it looks).
    return (
        EndKind.NODE_LOST,
        None,
        f"the task was shut down from outside (service changed, node drained): {reason}",
    )
