"""One instance's services, wired together once at start and closed once at shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .audit.service import Audits
from .config import Settings
from .datasets import Datasets
from .datasets._git import die_with_parent, use_credentials_file
from .errors import MaoError
from .executors.backends import Backends
from .executors.seam import Health
from .federation.cluster import EtcdCluster
from .federation.compaction import Compactor
from .federation.etcd import Etcd
from .federation.locks import Locks
from .federation.members import Membership
from .federation.registry import Registry
from .federation.seals import Sealer
from .federation.space import EtcdNearQuota, EtcdSpace
from .federation.tls import EtcdTls
from .gateway.insights import InsightsPublisher
from .gateway.limits import RateLimiter, WriteBudget
from .gateway.listener import RawListener
from .gateway.raw import RawStore
from .gateway.tokens import GatewayKeys
from .merging.pins import Pins
from .merging.registrations import Registrations
from .merging.voting import Voting
from .metrics import Metrics
from .pipelines.service import PipelineService
from .private_files import gateway_secret
from .retention import Retention
from .runs.door import RunDoor
from .runs.engine import Runner
from .runs.reconcile import Reconciler
from .scheduling.backfill import Backfills
from .scheduling.cron import Scheduler
from .scheduling.federation import FederationScheduler
from .scheduling.triggers import DataTriggers
from .services import Hooks, Periodic, Service
from .store import Store
from .store.gateway import GatewayKeyStore, ListenerProgress
from .store.outage import PendingMerges, RegistryCache
from .store.pins import PinStore

log = logging.getLogger(__name__)

# Seconds between two sweeps of the backends for objects no attempt watches.
SWEEP_INTERVAL = 300.0


@dataclass
class Node:
    settings: Settings
    etcd: Etcd
    registry: Registry
    sealer: Sealer
    locks: Locks
    membership: Membership
    cluster: EtcdCluster
    store: Store
    datasets: Datasets
    backends: Backends
    voting: Voting
    runner: Runner
    door: RunDoor
    scheduler: Scheduler
    federation_scheduler: FederationScheduler
    pipelines: PipelineService
    raw: RawStore
    gateway_keys: GatewayKeys
    listener: RawListener | None
    audits: Audits
    triggers: DataTriggers
    backfills: Backfills
    compactor: Compactor
    space: EtcdSpace
    # What has started, in order: closed in reverse (by ``close``, or by a ``start`` that failed).
    _started: list[tuple[str, Service]] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    retention: Retention | None = None

    @classmethod
    def build(cls, settings: Settings) -> Node:
        tls = (
            EtcdTls.from_files(settings.etcd_ca, settings.etcd_cert, settings.etcd_key)
            if settings.etcd_ca and settings.etcd_cert and settings.etcd_key
            else None
        )
        etcd = Etcd(settings.etcd_endpoints, timeout=settings.etcd_timeout, tls=tls)
        # Seals what this instance writes for the others, checks what they wrote (federation/seals.py).
        sealer = Sealer(settings.instance_name, tls)
        registry = Registry(etcd, sealer)
        locks = Locks(etcd, settings.instance_name, ttl=settings.lock_ttl, wait=settings.lock_wait)
        membership = Membership(etcd, settings, sealer)
        store = Store(settings.database_url)
        datasets = Datasets(
            settings.data_dir,
            git_name=settings.git_name,
            git_email=settings.git_email,
            network_timeout=settings.git_timeout,
            tool_owner=settings.tool_user(),
            max_output=settings.step_max_output,
            max_files=settings.step_max_files,
            master_roots=settings.master_roots,
        )
        use_credentials_file(str(settings.git_credentials) if settings.git_credentials else None)
        backends = Backends.build(settings)
        registrations = Registrations(registry, RegistryCache(store))
        pins = Pins(PinStore(store), registrations)
        voting = Voting(datasets, locks, PendingMerges(store), registrations, etcd, pins)
        insights = InsightsPublisher(etcd, settings.instance_name)
        runner = Runner(settings, store, registrations, datasets, backends, voting, insights, pins)
        door = RunDoor(runner, settings.instance_name)
        scheduler = Scheduler(store, door)
        federation_scheduler = FederationScheduler(
            settings, etcd, scheduler, door, store, membership, registry
        )
        pipelines = PipelineService(
            settings, store, registry, registrations, datasets, runner, scheduler, backends, pins
        )
        compactor = Compactor(etcd, settings.etcd_compact_interval, settings.etcd_compact_keep)
        space = EtcdSpace(etcd, settings.etcd_quota_bytes, compactor, settings.instance_name)
        # Marks the raw entries this instance acknowledged, for its own raw listener (gateway/raw.py).
        gateway_key = gateway_secret(settings.data_dir)
        listener = None
        if settings.raw_dataset:
            listener = RawListener(
                settings,
                settings.raw_dataset,
                etcd,
                registry,
                registrations,
                datasets,
                voting,
                ListenerProgress(store),
                secret=gateway_key,
                pins=pins,
            )
        metrics = Metrics()
        # The operator's view hooks in here, not in the services' constructors.
        runner.metrics = scheduler.metrics = federation_scheduler.metrics = voting.metrics = metrics
        locks.on_dataset_wait = metrics.lock_wait.observe
        return cls(
            metrics=metrics,
            retention=Retention(
                store, settings.run_retention_days, extras=[runner.attempts.step_logs.forget]
            ),
            settings=settings,
            etcd=etcd,
            registry=registry,
            sealer=sealer,
            locks=locks,
            membership=membership,
            cluster=EtcdCluster(etcd),
            store=store,
            datasets=datasets,
            backends=backends,
            voting=voting,
            runner=runner,
            door=door,
            scheduler=scheduler,
            federation_scheduler=federation_scheduler,
            pipelines=pipelines,
            raw=RawStore(
                etcd,
                settings.instance_name,
                settings.raw_ttl,
                RateLimiter(settings.gateway_rate, settings.gateway_burst),
                WriteBudget(settings.gateway_bytes_per_second, settings.gateway_entries_per_second),
                secret=gateway_key,
                space=space,
            ),
            gateway_keys=GatewayKeys(GatewayKeyStore(store)),
            listener=listener,
            audits=Audits(settings, etcd, registry, store, datasets, pins),
            triggers=DataTriggers(settings, etcd, store, door, registry, datasets, pins),
            backfills=Backfills(store, door, runner, federation_scheduler.book.all),
            compactor=compactor,
            space=space,
        )

    def services(self) -> list[tuple[str, Service]]:
        """Every part of the node with a lifetime, in the order they start; ``close`` goes in reverse.
        etcd's client and the instance's name come first (a name a live instance holds stops the start
        before anything else opens), then the database, git and the backends; voting and the raw
        listener before the runs (closed after them: a step that ended during the shutdown still
        votes, and the listener's last batch is voted before voting closes); the runs a previous
        process left before the queue and the schedulers (whose catch-up runs queue behind them); the
        schedulers closed first of all that start runs."""
        services: list[tuple[str, Service]] = [
            ("etcd client", Hooks(close=self.etcd.close)),
            ("membership", self.membership),
            ("database", self.store),
            ("git", Hooks(start=self._open_git, close=self._close_git)),
            ("backends", self.backends),
            # Closed after every lock holder (voting, the listener, the runs): revokes the locks' lease.
            ("locks", Hooks(close=self.locks.close)),
            ("voting", self.voting),
        ]
        if self.listener is not None:
            services.append(("raw listener", self.listener))
        services += [
            ("runner", Hooks(start=self._resume_runs, close=self.runner.shutdown)),
            # After the resumed runs claimed their objects: everything else of this instance goes.
            ("backend sweep", Periodic("backend sweep", SWEEP_INTERVAL, self.runner.execution.sweep)),
            ("run queue", Hooks(start=self._restore_queue)),
            ("audits", self.audits),
            ("backfills", Hooks(close=self.backfills.close)),
            ("scheduler", self.scheduler),
            ("federation scheduler", self.federation_scheduler),
            ("data triggers", self.triggers),
        ]
        if (gc := self.settings.git_gc_interval) > 0:
            services.append(("git gc", Periodic("git gc", gc, self.datasets.collect_garbage, first_wait=gc)))
        services += [("etcd compaction", self.compactor), ("etcd space", self.space)]
        if self.retention is not None:
            services.append(("retention", self.retention))
        return services

    async def start(self) -> None:
        """Start what the node needs to serve, in the order of ``services()``. The database must
        answer; etcd and the backends may come later (requests that need them answer 503 meanwhile).
        A part that fails to start closes the ones started before it, and the error goes up."""
        if self.sealer.problem:
            log.warning("%s", self.sealer.problem)
        elif self.settings.etcd_insecure:
            log.info(
                "etcd is reached without TLS (MAO_ETCD_INSECURE=1): the owners of registrations and the "
                "writers of federation records are claims, not proofs (docs/security.md)"
            )
        for name, service in self.services():
            try:
                await service.start()
            except BaseException:
                log.warning("starting the %s failed: closing what started before it", name)
                await self.close()
                raise
            self._started.append((name, service))
        try:
            await self.etcd.check()
        except MaoError as exc:
            log.warning("etcd is not reachable yet: %s", exc.message)
        for name, health in (await self.backends.health()).items():
            if not health.ok:
                log.warning("backend %s is not reachable yet: %s", name, health.message)

    async def _open_git(self) -> None:
        if not die_with_parent():
            log.warning("setpriv (util-linux) not found: git children will not die with this process")
        # Before any git runs: lock files a killed git left would fail every later command needing them.
        await self.datasets.clear_stale_locks()

    async def _close_git(self) -> None:
        self.datasets.close()

    async def _resume_runs(self) -> None:
        reconciler = Reconciler(self.runner, self.store, self.runner.pins, self.datasets)
        resumed, closed = await reconciler.reconcile()
        if resumed:
            log.warning("resumed %d run(s) that a previous orchestrator process left running", resumed)
        if closed:
            log.warning("closed %d run(s) that a previous orchestrator process left unfinished", closed)

    async def _restore_queue(self) -> None:
        # Queued runs wait on, in order, ahead of anything the schedulers start.
        if queued := await self.runner.restore_queue():
            log.info("%d queued run(s) from before the restart are admitted again, in order", queued)

    async def close(self) -> None:
        """Close every part that started, in the reverse order, each whatever happened to the one
        before: a listener that fails to stop must not keep the member lease, etcd or the database open."""
        while self._started:
            name, service = self._started.pop()
            try:
                await service.close()
            except Exception:
                log.exception("closing the %s failed; closing the rest", name)

    async def _etcd_health(self) -> None:
        """A quorum answers, no alarm is raised and the database is not near its quota."""
        await self.etcd.check()
        if problem := self.space.problem(await self.space.read()):
            raise EtcdNearQuota(problem)

    def warnings(self) -> list[str]:
        """What the operator should know although nothing is down (``GET /health``)."""
        return [self.sealer.problem] if self.sealer.problem else []

    async def health(self) -> tuple[dict[str, str], dict[str, Health]]:
        """etcd's and the database's health ("ok" or the error), and every backend's."""
        checks = {"etcd": self._etcd_health, "database": self.store.check}
        result = {}
        for name, check in checks.items():
            try:
                await check()
                result[name] = "ok"
            except MaoError as exc:
                result[name] = exc.message
        return result, await self.backends.health()
