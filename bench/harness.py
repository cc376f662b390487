"""What every single-node benchmark needs: a Docker engine, the busybox image, etcd, an executor and an
orchestrator configured the way the test suite configures its own, and a way to record a result.

One place, so that a change to how a node must be started (a required setting, the API token) reaches
every benchmark at once instead of breaking the ones nobody re-ran.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import servers  # noqa: E402
from tests.api import Api  # noqa: E402

IMAGE = "busybox:latest"


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


def record(title: str, command: str, body: str) -> None:
    """Append one result to bench/README.md, headed with when and where it was measured."""
    heading = (
        f"### {title}{', ' if title else ''}{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with open(ROOT / "bench" / "README.md", "a") as readme:
        readme.write(f"\n{heading}\n\n`{command}`\n\n{body}\n")
