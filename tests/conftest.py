"""Shared pytest fixtures: session-scoped REAL servers for tests marked ``integration``.

Nothing here starts on import or autouse: a server starts only when a test asks for its
fixture, so unit tests (tests/unit) start nothing. Tests under tests/integration are marked
``integration`` automatically. The servers themselves live in :mod:`tests.servers`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests import servers

T = TypeVar("T")

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _start(what: str, starter: Callable[[], T]) -> T:
    """Run ``starter``; on failure fail the test with a message naming ``what`` (and the log tail)."""
    try:
        return starter()
    except Exception as exc:  # noqa: BLE001 - any failure becomes one clear message
        pytest.fail(f"could not start {what}: {type(exc).__name__}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def servers_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """One temp dir for all session servers' data and logs.

    Removed at session end when no test failed (kept otherwise, for the servers' logs).
    """
    path = tmp_path_factory.mktemp("servers")
    yield path
    if request.session.testsfailed == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine(servers_tmp: Path) -> Iterator:
    """A ``docker.DockerClient`` on a running engine; dockerd is started (and later stopped) if needed."""
    import docker

    started, handle = _start(
        "the Docker engine (dockerd)", lambda: servers.ensure_docker(servers_tmp / "dockerd")
    )
    client = docker.from_env(timeout=120)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            servers.remove_submitted(client)
        client.close()
        if started:
            servers.stop_docker(handle)


@pytest.fixture(scope="session")
def busybox_image(docker_engine) -> str:
    """Tag ``busybox:latest`` of a local image built offline from the host's busybox-static."""
    tag = "busybox:latest"
    _start(f"image {tag}", lambda: servers.build_busybox_image(tag, client=docker_engine))
    return tag


@pytest.fixture(scope="session")
def swarm(docker_engine) -> Iterator[servers.SwarmHold]:
    """The Docker engine as a single-node swarm manager on loopback, left as it was found at the end
    (tests/servers/swarm.py: shared with other sessions on this engine, counted under a file lock)."""
    hold = _start("a single-node Docker Swarm", servers.acquire_swarm)
    try:
        yield hold
    finally:
        servers.release_swarm(hold)


@pytest.fixture(scope="session")
def slurm() -> Iterator[servers.SlurmCluster]:
    """A private single-node Slurm (munged, slurmctld, slurmd) on loopback ports, in a temporary folder
    of its own, stopped at the end (tests/servers/slurm.py). Skipped, with the reason, where it cannot
    run (not root, or the packages missing)."""
    missing = servers.slurm_missing()
    if missing:
        pytest.skip(f"Slurm: {missing}")
    cluster = _start("a single-node Slurm", servers.start_slurm)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd(servers_tmp: Path) -> Iterator[servers.EtcdServer]:
    """One etcd member on a free loopback port (``.endpoint`` is "127.0.0.1:port")."""
    server = _start("etcd", lambda: servers.start_etcd(servers_tmp / "etcd", name="etcd-session"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres(servers_tmp: Path) -> Iterator[servers.PostgresServer]:
    """A private PostgreSQL: ``.url`` (SQLAlchemy asyncpg URL), ``.create_database(name)``."""
    server = _start("PostgreSQL", lambda: servers.start_postgres(servers_tmp))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def executor(
    docker_engine, busybox_image: str, servers_tmp: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.ServiceProcess]:
    """One ``python -m executor`` with a random token, on its Unix socket (``.url`` is unix:///...,
    ``.request(method, path)`` talks to it), mounting folders under the session's temporary folder
    (where every test's data dir is)."""
    token = secrets.token_hex(16)
    env = {
        "MAO_INSTANCE_NAME": f"session-{os.getpid()}",
        "MAO_EXECUTOR_DATA_ROOT": str(tmp_path_factory.getbasetemp()),
    }
    service = _start(
        "the executor (python -m executor)",
        lambda: servers.start_executor(env, token, log_dir=servers_tmp / "executor", name="executor"),
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def module_database_url(postgres: servers.PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL database for the requesting test module (SQLAlchemy asyncpg URL)."""
    stem = request.module.__name__.rsplit(".", 1)[-1].lower()
    name = "t_" + "".join(c if c.isalnum() else "_" for c in stem)[:50]
    return postgres.create_database(name)
