"""Orchestrators for the integration tests, one per database backend, sharing etcd and the executor.

Both run as real ``python -m orchestrator`` processes. Because they share one etcd they form a small
federation of two instances, so tests use unique names (``tests.api.unique``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.api import Api
from tests.servers.kube_fake import KubeFake


def orchestrator_env(
    name: str, data_dir: Path, etcd_endpoints: str, executor: servers.ServiceProcess, **extra: str
) -> dict[str, str]:
    return {
        "MAO_INSTANCE_NAME": name,
        "MAO_DATA_DIR": str(data_dir),
        "MAO_ETCD_ENDPOINTS": etcd_endpoints,
        # The session's etcd members are plain HTTP on loopback (tests that need TLS start their own).
        "MAO_ETCD_INSECURE": "1",
        "MAO_EXECUTOR_URL": executor.url,
        "MAO_EXECUTOR_TOKEN": executor.token or "",
        # An executor on plain TCP (a test chose MAO_EXECUTOR_LISTEN=tcp) is reached as it says.
        **({"MAO_EXECUTOR_INSECURE_TCP": "1"} if executor.url.startswith("http://") else {}),
        "MAO_GIT_NAME": f"MAO {name}",
        "MAO_GIT_EMAIL": f"mao@{name}.test",
        "MAO_ETCD_TIMEOUT": "2",
        "MAO_LOCK_TTL": "5",
        "MAO_LOG_LEVEL": "DEBUG",
        **extra,
    }


class Node:
    """A running orchestrator and an API client for it."""

    def __init__(self, service: servers.ServiceProcess, data_dir: Path) -> None:
        self.service = service
        self.data_dir = data_dir
        self.api = Api(service.url, service.token)
        self.name = service.env["MAO_INSTANCE_NAME"]

    def restart(self) -> None:
        self.service.restart()


def _start_node(
    backend: str,
    servers_tmp: Path,
    etcd: servers.EtcdServer,
    executor: servers.ServiceProcess,
    database_url: str | None,
) -> Node:
    name = f"node-{backend}"
    data_dir = servers_tmp / name
    extra = {"MAO_DATABASE_URL": database_url} if database_url else {}
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor, **extra)
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
    return Node(service, data_dir)


@pytest.fixture(scope="session")
def sqlite_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    node = _start_node("sqlite", servers_tmp, etcd, executor, None)
    yield node
    node.service.stop()


@pytest.fixture(scope="session")
def postgres_node(servers_tmp: Path, etcd, executor, busybox_image, postgres) -> Iterator[Node]:
    node = _start_node("pg", servers_tmp, etcd, executor, postgres.create_database("node_pg"))
    yield node
    node.service.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def node(request: pytest.FixtureRequest) -> Node:
    """Each test that takes ``node`` runs once per database backend."""
    return request.getfixturevalue(f"{request.param}_node")


@pytest.fixture
def api(node: Node) -> Api:
    return node.api


OPS_TOKEN = "ops-admin-token-0123456789"
OPS_METRICS_TOKEN = "ops-metrics-token-0123456789"


@pytest.fixture(scope="session")
def kube_fake(docker_engine, busybox_image: str, servers_tmp: Path) -> Iterator[KubeFake]:
    """The fake Kubernetes API (tests/servers/kube_fake.py), running pods in the shared Docker engine
    (the backend suite in backends/ and the node-level contract share it)."""
    fake = servers.start_kube_fake(servers_tmp / "kube-fake")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def staging_image(docker_engine) -> str:
    """The fetch mode's staging image, built by the script operators use (scripts/staging-image.sh)."""
    tag = "mao-staging:test"
    script = servers.REPO_ROOT / "scripts" / "staging-image.sh"
    done = subprocess.run(["bash", str(script), tag], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/staging-image.sh failed: {done.stderr[-2000:]}", pytrace=False)
    return tag


@pytest.fixture(scope="session")
def guarded_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    """An orchestrator with an admin token (``OPS_TOKEN``), a scraper's ``OPS_METRICS_TOKEN`` and
    JSON log lines: the operator's view (metrics, console, OpenAPI) is tested against it."""
    name = "node-ops"
    data_dir = servers_tmp / name
    env = orchestrator_env(
        name,
        data_dir,
        etcd.endpoint,
        executor,
        MAO_API_TOKEN=OPS_TOKEN,
        MAO_METRICS_TOKEN=OPS_METRICS_TOKEN,
        MAO_LOG_FORMAT="json",
    )
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    yield node
    node.service.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1366,1000",
)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Selenium (Debian's chromium + chromium-driver; Selenium Manager
    is kept offline, so nothing downloads a browser or a driver), with a fresh profile."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(
            "Debian's chromium and chromium-driver are missing: run scripts/bootstrap.sh", pytrace=False
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch anything
    profile = tempfile.mkdtemp(prefix="mao-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver
