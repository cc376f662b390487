"""Fast smoke tests proving the shared fixtures and helpers of tests/servers/ work for real."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time

import aetcd
import asyncpg
import pytest

from tests import servers

pytestmark = pytest.mark.integration


async def test_etcd_put_get(etcd: servers.EtcdServer) -> None:
    host, port = etcd.endpoint.split(":")
    async with aetcd.Client(host, int(port)) as client:
        await client.put(b"/mao/harness/key", b"value-1")
        result = await client.get(b"/mao/harness/key")
        assert result is not None and result.value == b"value-1"
        await client.delete(b"/mao/harness/key")


def test_busybox_image_runs_echo(docker_engine, busybox_image: str) -> None:
    image = docker_engine.images.get(busybox_image)
    assert "PATH=/bin:/usr/bin" in (image.attrs["Config"].get("Env") or [])
    assert image.labels.get(servers.BUSYBOX_LABEL) == servers.BUSYBOX_LABEL_VERSION
    output = docker_engine.containers.run(
        busybox_image,
        ["sh", "-c", "echo hello-from-busybox && test -d /usr/src/app && test -w /tmp && env true"],
        network_mode="host",
        remove=True,
    )
    assert output.decode().strip() == "hello-from-busybox"


async def test_postgres_connects_and_creates_database(postgres: servers.PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.dsn, timeout=30)
    try:
        assert await conn.fetchval("SELECT current_user") == "mao"
    finally:
        await conn.close()

    url = postgres.create_database("harness_smoke")
    assert url == postgres.url_for("harness_smoke") and url.startswith("postgresql+asyncpg://mao:")
    conn = await asyncpg.connect(postgres.dsn_for("harness_smoke"), timeout=30)
    try:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (42)")
        assert await conn.fetchval("SELECT x FROM t") == 42
    finally:
        await conn.close()
    # create_database always hands back a fresh, empty database
    postgres.create_database("harness_smoke")
    conn = await asyncpg.connect(postgres.dsn_for("harness_smoke"), timeout=30)
    try:
        assert await conn.fetchval("SELECT to_regclass('public.t')") is None
    finally:
        await conn.close()


async def _put_get(member: servers.EtcdServer, key: bytes, value: bytes | None = None) -> bytes | None:
    async with aetcd.Client(member.host, member.client_port, timeout=10) as client:
        if value is not None:
            await client.put(key, value)
        result = await client.get(key)
        return result.value if result is not None else None


async def test_etcd_cluster_survives_member_kill(tmp_path) -> None:
    members = servers.start_etcd_cluster(tmp_path, n=3)
    try:
        assert len({m.endpoint for m in members}) == 3
        assert await _put_get(members[0], b"/mao/cluster/a", b"1") == b"1"

        members[0].kill()
        assert not members[0].alive
        survivors = members[1:]
        # the two survivors keep quorum (a new leader may need one election timeout)
        servers.wait_until(
            lambda: all(m.is_healthy() for m in survivors), timeout=30, what="etcd survivors healthy"
        )
        assert await _put_get(survivors[0], b"/mao/cluster/b", b"2") == b"2"
        assert await _put_get(survivors[1], b"/mao/cluster/a") == b"1"

        members[0].restart()  # rejoins from its data dir and catches up
        servers.wait_until(lambda: members[0].is_healthy(), timeout=30, what="restarted member healthy")
        assert await _put_get(members[0], b"/mao/cluster/b") == b"2"
    finally:
        for member in members:
            member.destroy()


SLEEPER = [sys.executable, "-c", "import time; print('sleeper up', flush=True); time.sleep(120)"]


def test_managed_process_kill_stop_restart(tmp_path) -> None:
    proc = servers.ManagedProcess(SLEEPER, tmp_path / "sleeper.log", name="sleeper")
    try:
        first_pid = proc.pid
        servers.wait_until(lambda: "sleeper up" in proc.log_text(), timeout=30, what="sleeper output")
        assert proc.alive

        assert proc.kill() == -signal.SIGKILL
        assert not proc.alive

        proc.restart()
        assert proc.alive and proc.pid != first_pid
        servers.wait_until(lambda: proc.log_text().count("sleeper up") == 2, timeout=30, what="2nd start")

        assert proc.stop(timeout=30) == -signal.SIGTERM
        assert not proc.alive
        assert proc.log_text().count("=== [") == 2  # one header per start
    finally:
        proc.kill()


def test_managed_process_refuses_a_command_string(tmp_path) -> None:
    with pytest.raises(TypeError):
        servers.ManagedProcess("echo hi", tmp_path / "x.log")  # type: ignore[arg-type]


def test_wait_http_and_wait_until(tmp_path) -> None:
    port = servers.free_port()
    args = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path),
    ]
    web = servers.ManagedProcess(args, tmp_path / "http.log", name="http.server")
    try:
        assert servers.wait_http(f"http://127.0.0.1:{port}/", timeout=30, process=web) == 200
        assert servers.http_status(f"http://127.0.0.1:{port}/missing") == 404
    finally:
        web.stop()
    assert servers.http_status(f"http://127.0.0.1:{port}/") is None

    with pytest.raises(TimeoutError, match="the impossible"):
        servers.wait_until(lambda: False, timeout=0.3, interval=0.05, what="the impossible")

    # a process that dies while we wait fails fast, with its log in the message
    dying = servers.ManagedProcess(
        [sys.executable, "-c", "import sys; print('boom-marker'); sys.exit(3)"],
        tmp_path / "dying.log",
        name="dying",
    )
    started = time.monotonic()
    with pytest.raises(servers.ServerStartError, match="boom-marker"):
        servers.wait_http(f"http://127.0.0.1:{servers.free_port()}/", timeout=60, process=dying)
    assert time.monotonic() - started < 60


def test_executor_fixture_answers_health(executor: servers.ServiceProcess) -> None:
    assert executor.alive and executor.token
    # Reached as an installed one is: its private socket (the orchestrator's MAO_EXECUTOR_URL).
    assert executor.url.startswith("unix:///") and executor.socket is not None
    assert stat.S_IMODE(os.stat(executor.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(executor.socket)).st_mode) == 0o700
    assert executor.request("GET", "/health", headers=executor.headers).status_code == 200
