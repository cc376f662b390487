"""What every benchmark needs: a Docker engine, the busybox image, etcd, an executor and orchestrators
configured the way the test suite configures its own (``bench_node`` for one node, ``bench_federation``
for several sharing an etcd cluster), and a way to record a result.

One place, so that a change to how a node must be started (a required setting, the API token) reaches
every benchmark at once instead of breaking the ones nobody re-ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.executors.seam import Backend, ContainerSpec, EndKind  # noqa: E402
from tests import servers  # noqa: E402
from tests.api import Api  # noqa: E402

IMAGE = "busybox:latest"


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile by nearest rank (no interpolation: a value that was measured)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def one_attempt(backend: Backend, spec: ContainerSpec) -> None:
    """One object through a backend as the engine runs it: submitted, its log followed to the end,
    removed; RuntimeError unless it completed."""
    handle = await backend.submit(spec)

    async def keep_log() -> int:
        return sum([len(chunk) async for chunk in backend.logs(handle, follow=True)])

    log = asyncio.create_task(keep_log())
    end = await backend.wait(handle, spec)
    await log
    await backend.cancel(handle)
    if end.kind is not EndKind.COMPLETED:
        raise RuntimeError(f"{spec.name}: {end}")


async def all_attempts(backend: Backend, specs: list[ContainerSpec], parallel: int) -> float:
    """Seconds for ``one_attempt`` of every spec, at most ``parallel`` at a time; each must have
    written its shard's file."""
    slots = asyncio.Semaphore(parallel)

    async def shard(spec: ContainerSpec) -> None:
        async with slots:
            await one_attempt(backend, spec)

    started = time.monotonic()
    await asyncio.gather(*(shard(spec) for spec in specs))
    took = time.monotonic() - started
    for spec in specs:
        assert (spec.output.folder / f"{spec.identity.shard}.txt").exists(), spec.name
    return took


@dataclass(frozen=True)
class BenchNode:
    api: Api
    tmp: Path
    instance: str
    orchestrator: servers.ServiceProcess
    executor: servers.ServiceProcess


@contextlib.contextmanager
def bench_node(
    name: str,
    executor_env: Mapping[str, str] | None = None,
    orchestrator_env: Mapping[str, str] | None = None,
    api_timeout: float = 120.0,
) -> Iterator[BenchNode]:
    """Start a node in a temp folder; everything is stopped and removed when the block ends."""
    tmp = Path(tempfile.mkdtemp(prefix=f"mao-{name}-"))
    started_docker, docker_handle = servers.ensure_docker(tmp / "dockerd")
    running: list[servers.ServiceProcess | servers.EtcdServer] = []
    try:
        servers.build_busybox_image(IMAGE)
        etcd = servers.start_etcd(tmp / "etcd", name=name)
        running.append(etcd)
        # An instance name of its own: executors on one engine remove each other's "leftovers" by name.
        instance = f"{name}-{os.getpid()}"
        executor = servers.start_executor(
            {"MAO_INSTANCE_NAME": instance, **(executor_env or {})}, log_dir=tmp / "logs"
        )
        running.append(executor)
        env = {
            "MAO_INSTANCE_NAME": instance,
            "MAO_DATA_DIR": str(tmp / "node"),
            "MAO_ETCD_ENDPOINTS": etcd.endpoint,
            "MAO_ETCD_INSECURE": "1",  # a plain loopback etcd started for the bench
            "MAO_EXECUTOR_URL": executor.url,
            "MAO_EXECUTOR_TOKEN": executor.token or "",
            "MAO_LOG_LEVEL": "WARNING",
            **(orchestrator_env or {}),
        }
        orchestrator = servers.start_orchestrator(env, log_dir=tmp / "logs", name=name)
        running.append(orchestrator)
        yield BenchNode(
            Api(orchestrator.url, orchestrator.token, timeout=api_timeout), tmp, instance, orchestrator, executor
        )
    finally:
        for service in reversed(running):
            service.stop()
        if started_docker:
            servers.stop_docker(docker_handle)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class BenchFederation:
    root: Path
    etcd: list[servers.EtcdServer]
    nodes: dict[str, servers.ServiceProcess]  # by instance name, in the order given
    executor: servers.ServiceProcess | None

    def api(self, name: str, timeout: float = 120.0) -> Api:
        node = self.nodes[name]
        return Api(node.url, node.token, timeout=timeout)


@contextlib.contextmanager
def bench_federation(
    prefix: str,
    names: Sequence[str],
    etcd_members: int = 3,
    executor: bool = True,
    node_env: Callable[[str], Mapping[str, str]] | None = None,
    log_level: str = "INFO",
    keep: bool = False,
) -> Iterator[BenchFederation]:
    """Orchestrators named ``names`` (SQLite, data dirs side by side in one temp folder) on an etcd
    cluster of ``etcd_members``, each listing the members starting from a different one, and one
    executor they share (``executor=False``: none, nor Docker, for benches that run no pipeline).
    ``node_env(name)`` adds or overrides a node's settings. Everything is stopped when the block
    ends, and the folder removed unless ``keep``."""
    root = Path(tempfile.mkdtemp(prefix=f"mao-{prefix}-"))
    print(f"# {prefix}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, servers in {root}", flush=True)
    started_docker, docker_handle = False, None
    running: list[servers.ServiceProcess] = []
    members: list[servers.EtcdServer] = []
    try:
        service = None
        if executor:
            started_docker, docker_handle = servers.ensure_docker(root / "dockerd")
            servers.build_busybox_image(IMAGE)
            # An instance name of its own: executors on one engine remove each other's leftovers by name.
            service = servers.start_executor(
                {"MAO_INSTANCE_NAME": f"{prefix}-{os.getpid()}"}, log_dir=root / "logs", name="executor"
            )
            running.append(service)
        if etcd_members == 1:
            members = [servers.start_etcd(root / "etcd", name=f"{prefix}-etcd")]
        else:
            members = servers.start_etcd_cluster(root / "etcd", n=etcd_members, name_prefix=f"{prefix}-etcd")
        endpoints = [m.endpoint for m in members]
        nodes = {}
        for i, name in enumerate(names):
            rotated = endpoints[i % len(endpoints) :] + endpoints[: i % len(endpoints)]
            env = {
                "MAO_INSTANCE_NAME": name,
                "MAO_DATA_DIR": str(root / name),
                "MAO_ETCD_ENDPOINTS": ",".join(rotated),
                "MAO_ETCD_INSECURE": "1",  # a plain loopback etcd started for the bench
                # Without an executor: an address nobody answers (no pipeline runs there).
                "MAO_EXECUTOR_URL": service.url if service else f"unix://{root}/no-executor.sock",
                "MAO_EXECUTOR_TOKEN": (service.token or "") if service else "unused",
                "MAO_LOG_LEVEL": log_level,
                **(node_env(name) if node_env else {}),
            }
            nodes[name] = servers.start_orchestrator(env, log_dir=root / "logs", name=name)
            running.append(nodes[name])
        yield BenchFederation(root, members, nodes, service)
    finally:
        for process in reversed(running):
            process.stop()
        for member in members:
            member.destroy()
        if started_docker:
            servers.stop_docker(docker_handle)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def docker_scratch(prefix: str) -> Iterator[Path]:
    """A scratch folder, with the test suite's Docker engine up and the busybox image built; the
    folder is removed when the block ends (the engine stays, as the suite's fixtures leave it)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        servers.ensure_docker(root / "dockerd")
        servers.build_busybox_image(IMAGE)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def publish(body: str, write: bool, title: str, command: str) -> None:
    """Print a result; with ``--write`` (``write``) also append it to bench/README.md (``record``)."""
    print(body)
    if write:
        record(title, command, body)


def record(title: str, command: str, body: str) -> None:
    """Append one result to bench/README.md, headed with when and where it was measured."""
    heading = (
        f"### {title}{', ' if title else ''}{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with open(ROOT / "bench" / "README.md", "a") as readme:
        readme.write(f"\n{heading}\n\n`{command}`\n\n{body}\n")
