"""What each API area may use of the node: one small Protocol per area, set on the app by ``install``.

A handler obtains its services with ``facade(request, AREA)`` and sees only that area's Protocol, so
mypy refuses a handler that reaches for a service its area does not list, and a test can serve an
area from a stand-in that has just those parts. ``Node`` satisfies every Protocol (``install`` is
type-checked against them); adding a service to an area is a line here, on purpose.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from aiohttp import web

from ..audit.service import Audits
from ..config import Settings
from ..datasets import Datasets
from ..executors.backends import Backends
from ..executors.seam import Health
from ..federation.cluster import EtcdCluster
from ..federation.etcd import Etcd
from ..federation.locks import Locks
from ..federation.members import Membership
from ..federation.registry import Registry
from ..federation.space import EtcdSpace
from ..gateway.raw import RawStore
from ..gateway.tokens import GatewayKeys
from ..metrics import Metrics
from ..pipelines.service import PipelineService
from ..runs.door import RunDoor
from ..runs.engine import Runner
from ..scheduling.backfill import Backfills
from ..scheduling.cron import Scheduler
from ..scheduling.federation import FederationScheduler
from ..scheduling.triggers import DataTriggers
from ..store import Store

F = TypeVar("F")


class Configured(Protocol):
    settings: Settings


class PinsCheck(Protocol):
    """What checking a pipeline's registrations against the accepted ones needs (pipelines, runs)."""

    store: Store
    pipelines: PipelineService


class AuditsFacade(Protocol):
    audits: Audits


class BackendsFacade(Protocol):
    backends: Backends
    runner: Runner


class BackfillsFacade(Protocol):
    backfills: Backfills


class FederationFacade(Configured, Protocol):
    cluster: EtcdCluster
    etcd: Etcd
    federation_scheduler: FederationScheduler
    membership: Membership


class GatewayFacade(Protocol):
    gateway_keys: GatewayKeys
    metrics: Metrics
    raw: RawStore


class HealthFacade(Configured, Protocol):
    backends: Backends

    async def health(self) -> tuple[dict[str, str], dict[str, Health]]: ...
    def warnings(self) -> list[str]: ...


class HistoryFacade(Protocol):
    datasets: Datasets
    pipelines: PipelineService
    registry: Registry


class LineageFacade(Configured, Protocol):
    federation_scheduler: FederationScheduler
    registry: Registry
    store: Store


class LocksFacade(Protocol):
    locks: Locks


class LogsFacade(Protocol):
    runner: Runner
    store: Store


class MetricsFacade(Protocol):
    backends: Backends
    etcd: Etcd
    membership: Membership
    metrics: Metrics
    runner: Runner
    space: EtcdSpace
    store: Store


class PipelinesFacade(PinsCheck, Configured, Protocol):
    backends: Backends
    backfills: Backfills
    datasets: Datasets
    door: RunDoor
    federation_scheduler: FederationScheduler
    runner: Runner
    scheduler: Scheduler
    triggers: DataTriggers


class RegistryFacade(Configured, Protocol):
    pipelines: PipelineService
    registry: Registry


class RunsFacade(PinsCheck, Protocol):
    door: RunDoor
    federation_scheduler: FederationScheduler
    runner: Runner
    scheduler: Scheduler
    triggers: DataTriggers


class VersionsFacade(Protocol):
    pipelines: PipelineService


AUDITS = web.AppKey("audits facade", AuditsFacade)
BACKENDS = web.AppKey("backends facade", BackendsFacade)
BACKFILLS = web.AppKey("backfills facade", BackfillsFacade)
FEDERATION = web.AppKey("federation facade", FederationFacade)
GATEWAY = web.AppKey("gateway facade", GatewayFacade)
HEALTH = web.AppKey("health facade", HealthFacade)
HISTORY = web.AppKey("history facade", HistoryFacade)
LINEAGE = web.AppKey("lineage facade", LineageFacade)
LOCKS = web.AppKey("locks facade", LocksFacade)
LOGS = web.AppKey("logs facade", LogsFacade)
METRICS = web.AppKey("metrics facade", MetricsFacade)
PIPELINES = web.AppKey("pipelines facade", PipelinesFacade)
REGISTRY = web.AppKey("registry facade", RegistryFacade)
RUNS = web.AppKey("runs facade", RunsFacade)
VERSIONS = web.AppKey("versions facade", VersionsFacade)


class Everything(
    AuditsFacade,
    BackendsFacade,
    BackfillsFacade,
    FederationFacade,
    GatewayFacade,
    HealthFacade,
    HistoryFacade,
    LineageFacade,
    LocksFacade,
    LogsFacade,
    MetricsFacade,
    PipelinesFacade,
    RegistryFacade,
    RunsFacade,
    VersionsFacade,
    Protocol,
):
    """What serves every area at once: the node."""


def install(app: web.Application, node: Everything) -> None:
    """Serve every area from ``node`` (each key typed by its area's Protocol)."""
    app[AUDITS] = app[BACKENDS] = app[BACKFILLS] = app[FEDERATION] = app[GATEWAY] = node
    app[HEALTH] = app[HISTORY] = app[LINEAGE] = app[LOCKS] = app[LOGS] = app[METRICS] = node
    app[PIPELINES] = app[REGISTRY] = app[RUNS] = app[VERSIONS] = node


def facade(request: web.Request, area: web.AppKey[F]) -> F:
    """The services of ``area`` that this request's handler may use."""
    return request.app[area]
