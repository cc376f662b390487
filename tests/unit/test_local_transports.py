"""Local transports that authenticate the server (docs/security.md#transports), piece by piece: the
private socket, the client's proofs (owner, folder, SO_PEERCRED, a pinned TLS certificate), the
settings that choose a transport, and maoctl's routing. The attack end to end, with a squatter running
as another uid, is tests/integration/test_transport_trust.py."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from ctl.local_socket import BASE_URL, Route, route
from executor.config import SYSTEM_FOLDERS
from executor.config import load_settings as load_executor_settings
from executor.tls import ensure_certificate, fingerprint_of, server_context
from executor.transport import (
    UntrustedServer,
    check_peer,
    connect_unix,
    format_fingerprint,
    listen_private,
    parse_fingerprint,
    peer_uid,
    socket_file_problem,
    trusted_uids,
)
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.executors.docker import DockerBackend
from orchestrator.executors.seam import BackendUnavailable
from orchestrator.executors.transport import TrustedUnixConnector

ROOT = os.geteuid() == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A private folder with a short path (a socket address holds 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="mao-t-"))
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


# -- the server side --------------------------------------------------------------------------------
def test_the_socket_is_private_and_a_live_one_is_never_taken_over(short_tmp: Path) -> None:
    path = short_tmp / "run" / "x.sock"
    first = listen_private(path)
    first.listen()
    try:
        assert mode(path.parent) == 0o700 and mode(path) == 0o600 and stat.S_ISSOCK(os.lstat(path).st_mode)
        with pytest.raises(OSError, match="already listens"):
            listen_private(path)
    finally:
        first.close()
    # Its process died: the socket file is left, nothing answers, a new server replaces it.
    listen_private(path).close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        listen_private(path)


# -- the client's proofs ----------------------------------------------------------------------------
def test_a_listener_of_another_uid_gets_nothing(short_tmp: Path) -> None:
    """check_peer refuses a server whose uid is not trusted, and connect_unix refuses before connecting
    when the socket's folder belongs to such a uid; the server receives nothing either way."""
    path = short_tmp / "x.sock"
    server = listen_private(path)
    server.listen()
    stranger = frozenset({os.geteuid() + 4242})
    try:
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(path))
        accepted, _ = server.accept()
        with pytest.raises(UntrustedServer, match=f"runs as uid {os.geteuid()}"):
            check_peer(client, str(path), stranger)
        client.close()
        with pytest.raises(UntrustedServer, match="belongs to uid"):
            connect_unix(str(path), stranger, timeout=5)
        accepted.settimeout(5)
        assert accepted.recv(100) == b""  # closed without a byte
        accepted.close()
        # The same server, for a client that trusts its uid.
        sock = connect_unix(str(path), trusted_uids(), timeout=5)
        accepted, _ = server.accept()
        sock.sendall(b"hello")
        assert accepted.recv(100) == b"hello"
        sock.close()
        accepted.close()
    finally:
        server.close()


@pytest.mark.skipif(not ROOT, reason="needs root to start a process as another uid")
def test_the_kernel_names_the_uid_of_a_squatter(tmp_path: Path) -> None:
    """A real process running as uid 65534 listens; SO_PEERCRED says so, and check_peer refuses it."""
    folder = Path(tempfile.mkdtemp(prefix="mao-open-", dir="/tmp"))
    folder.chmod(0o1777)  # a folder anyone may write: the squatter can put a socket there
    path = folder / "squat.sock"
    script = (
        "import socket, sys, time\n"
        f"s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); s.listen(); print('ready', flush=True)\n"
        "c, _ = s.accept(); c.settimeout(3); data = b''\n"
        "try:\n    data = c.recv(100)\nexcept OSError:\n    pass\n"
        "print(repr(data), flush=True)\n"
    )
    squatter = None
    try:
        squatter = subprocess.Popen(
            # The system's python: the test's own may live where uid 65534 cannot read.
            ["/usr/bin/python3", "-c", script], user=65534, group=65534, extra_groups=[],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "ready"
        # The folder check alone refuses it (others may write there) ...
        assert "may be written by other users" in (socket_file_problem(str(path), trusted_uids()) or "")
        # ... and the peer check refuses it even when the path is not looked at.
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        assert peer_uid(sock) == 65534
        with pytest.raises(UntrustedServer, match="uid 65534"):
            check_peer(sock, str(path), trusted_uids())
        sock.close()
        assert squatter.stdout.readline().strip() == "b''"  # it received nothing
    finally:
        if squatter is not None:
            squatter.kill()
            squatter.wait(10)
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_socket_file_problems(short_tmp: Path) -> None:
    path = short_tmp / "x.sock"
    assert socket_file_problem(str(path), trusted_uids()) is None  # nothing there: connecting fails
    listen_private(path).close()
    assert socket_file_problem(str(path), trusted_uids()) is None
    short_tmp.chmod(0o777)
    assert "may be written by other users" in (socket_file_problem(str(path), trusted_uids()) or "")
    short_tmp.chmod(0o700)
    assert "belongs to uid" in (socket_file_problem(str(path), frozenset({os.geteuid() + 1})) or "")
    if ROOT:
        os.chown(path, 65534, 65534)
        assert "it belongs to uid 65534" in (socket_file_problem(str(path), trusted_uids()) or "")


async def _unix_app(path: Path, seen: list[str]) -> web.AppRunner:
    async def health(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, listen_private(path)).start()
    return runner


async def test_the_orchestrators_connector_sends_nothing_to_an_unproven_server(short_tmp: Path) -> None:
    path = short_tmp / "executor.sock"
    seen: list[str] = []
    runner = await _unix_app(path, seen)
    try:
        stranger = TrustedUnixConnector(str(path), frozenset({os.geteuid() + 4242}))
        async with aiohttp.ClientSession(connector=stranger) as session:
            with pytest.raises(UntrustedServer):
                await session.get("http://executor/health", headers={"Authorization": "Bearer secret"})
        assert seen == []
        client = DockerBackend("local", f"unix://{path}", "secret", lambda p: p)
        await client.start()
        try:
            assert (await client.health()).ok
        finally:
            await client.close()
        assert seen == ["Bearer secret"]
    finally:
        await runner.cleanup()


async def test_a_pinned_certificate_is_required(short_tmp: Path) -> None:
    cert, key = ensure_certificate(short_tmp / "tls", "node", "127.0.0.1")
    assert mode(cert.parent / "tls.key") == 0o600
    assert ensure_certificate(short_tmp / "tls", "node", "127.0.0.1") == (cert, key)  # kept: the pin holds
    other, _ = ensure_certificate(short_tmp / "other", "node", "127.0.0.1")
    seen: list[str] = []

    async def health(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        wrong = DockerBackend("local", f"https://127.0.0.1:{port}", "secret", lambda p: p, None, fingerprint_of(other))
        await wrong.start()
        try:
            health = await wrong.health()
            assert not health.ok and "did not prove it is the executor" in health.message
            with pytest.raises(BackendUnavailable) as refused:
                await wrong.resolve_image("busybox")
            assert refused.value.code == "executor_untrusted"
        finally:
            await wrong.close()
        assert seen == []
        right = DockerBackend("local", f"https://127.0.0.1:{port}", "secret", lambda p: p, None, fingerprint_of(cert))
        await right.start()
        try:
            assert (await right.health()).ok
        finally:
            await right.close()
        assert seen == ["Bearer secret"]
    finally:
        await runner.cleanup()


@given(st.binary(min_size=32, max_size=32))
def test_fingerprints_parse_in_every_spelling(digest: bytes) -> None:
    spelled = format_fingerprint(digest)
    for text in (spelled, spelled.lower(), spelled.removeprefix("sha256:"), digest.hex(), digest.hex().upper()):
        assert parse_fingerprint(text) == digest


@given(st.text(max_size=120))
def test_anything_else_is_not_a_fingerprint(text: str) -> None:
    value = parse_fingerprint(text)
    assert value is None or len(value) == 32


# -- the settings that choose a transport ------------------------------------------------------------
def orchestrator_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "MAO_DATA_DIR": str(tmp_path / "data"),
        "MAO_EXECUTOR_TOKEN": "secret",
        "MAO_INSTANCE_NAME": "node1",
        "MAO_ETCD_INSECURE": "1",
        **extra,
    }


def problems(tmp_path: Path, **extra: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(orchestrator_env(tmp_path, **extra))
    return "\n".join(refused.value.problems)


def test_the_orchestrator_reaches_its_executor_only_over_a_proving_transport(tmp_path: Path) -> None:
    pin = "AB:" * 31 + "AB"
    assert load_settings(orchestrator_env(tmp_path, MAO_EXECUTOR_URL="unix:///run/mao/e.sock")).executor_url == (
        "unix:///run/mao/e.sock"
    )
    tls = load_settings(orchestrator_env(tmp_path, MAO_EXECUTOR_URL="https://10.0.0.5:8081",
                                         MAO_EXECUTOR_TLS_FINGERPRINT=f"sha256:{pin}"))  # fmt: skip
    assert tls.executor_fingerprint == bytes([0xAB]) * 32
    plain = load_settings(
        orchestrator_env(tmp_path, MAO_EXECUTOR_URL="http://127.0.0.1:8081", MAO_EXECUTOR_INSECURE_TCP="1")
    )
    assert plain.executor_insecure_tcp
    assert "plain HTTP" in problems(tmp_path, MAO_EXECUTOR_URL="http://127.0.0.1:8081")
    assert "plain HTTP" in problems(
        tmp_path, MAO_EXECUTOR_URL="http://10.0.0.5:8081", MAO_EXECUTOR_INSECURE_TCP="1"
    )
    assert "pinned" in problems(tmp_path, MAO_EXECUTOR_URL="https://10.0.0.5:8081")
    assert "not a SHA-256" in problems(
        tmp_path, MAO_EXECUTOR_URL="https://10.0.0.5:8081", MAO_EXECUTOR_TLS_FINGERPRINT="abc"
    )
    assert "cannot apply" in problems(
        tmp_path, MAO_EXECUTOR_URL="http://127.0.0.1:8081", MAO_EXECUTOR_INSECURE_TCP="1",
        MAO_EXECUTOR_TLS_FINGERPRINT=pin,
    )  # fmt: skip
    assert "unix:///path" in problems(tmp_path, MAO_EXECUTOR_URL="ftp://x")
    assert "107 bytes" in problems(tmp_path, MAO_EXECUTOR_URL="unix:///" + "x" * 120)
    assert "must be absolute" in problems(tmp_path, MAO_API_SOCKET="relative.sock")


def test_a_pin_can_be_the_certificate_file(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(tmp_path / "tls", "node", "127.0.0.1")
    settings = load_settings(
        orchestrator_env(tmp_path, MAO_EXECUTOR_URL="https://127.0.0.1:8081", MAO_EXECUTOR_TLS_CERT=str(cert))
    )
    assert settings.executor_fingerprint == fingerprint_of(cert)


def test_insecure_settings_are_warned_about_as_tests_only(tmp_path: Path) -> None:
    from orchestrator.api.health import warnings

    settings = load_settings(
        orchestrator_env(tmp_path, MAO_EXECUTOR_URL="http://127.0.0.1:8081", MAO_EXECUTOR_INSECURE_TCP="1")
    )
    found = " ".join(warnings(settings))
    assert "MAO_ETCD_INSECURE=1" in found and "MAO_EXECUTOR_INSECURE_TCP=1" in found
    assert found.count("for tests only") == 2


def test_the_executor_listens_privately_unless_told(tmp_path: Path) -> None:
    base = {"MAO_EXECUTOR_TOKEN": "t", "MAO_EXECUTOR_DATA_ROOT": str(tmp_path)}
    settings = load_executor_settings(base)
    assert settings.listen == "unix" and settings.socket_path == tmp_path.resolve() / "executor" / "executor.sock"
    assert settings.address == f"unix://{settings.socket_path}"
    tcp = load_executor_settings({**base, "MAO_EXECUTOR_LISTEN": "tcp"})
    assert tcp.address == "http://127.0.0.1:8081" and tcp.socket_path is None
    tls = load_executor_settings({**base, "MAO_EXECUTOR_LISTEN": "tls", "MAO_EXECUTOR_HOST": "0.0.0.0"})
    assert tls.address == "https://0.0.0.0:8081"
    for env, needle in (
        ({"MAO_EXECUTOR_LISTEN": "tcp", "MAO_EXECUTOR_HOST": "0.0.0.0"}, "only allowed on loopback"),
        ({"MAO_EXECUTOR_LISTEN": "udp"}, "unix, tls or tcp"),
        ({"MAO_EXECUTOR_SOCKET": "/" + "s" * 120}, "107 bytes"),
        ({"MAO_EXECUTOR_TLS_CERT": "/nonexistent.crt"}, "go together"),
        ({"MAO_EXECUTOR_DATA_ROOT": "relative"}, "absolute"),
    ):
        with pytest.raises(ConfigError, match=needle):
            load_executor_settings({**base, **env})


@pytest.mark.parametrize("root", ["/", "/var", "/var/lib", *SYSTEM_FOLDERS, "/usr/local/mao", "/etc/mao"])
def test_a_data_root_is_never_a_system_folder(root: str) -> None:
    with pytest.raises(ConfigError, match="system folder"):
        load_executor_settings({"MAO_EXECUTOR_TOKEN": "t", "MAO_EXECUTOR_DATA_ROOT": root})


def test_the_data_root_defaults_to_the_orchestrators_data_dir(tmp_path: Path) -> None:
    settings = load_executor_settings({"MAO_EXECUTOR_TOKEN": "t", "MAO_DATA_DIR": str(tmp_path)})
    assert settings.data_root == tmp_path.resolve()


def test_the_docker_socket_is_never_under_the_data_root(tmp_path: Path) -> None:
    socket_file = tmp_path / "docker.sock"
    with pytest.raises(ConfigError, match="holds the Docker socket"):
        load_executor_settings(
            {"MAO_EXECUTOR_TOKEN": "t", "MAO_EXECUTOR_DATA_ROOT": str(tmp_path),
             "MAO_EXECUTOR_DOCKER_SOCKET": str(socket_file)}  # fmt: skip
        )


# -- maoctl's routing ---------------------------------------------------------------------------------
def test_maoctl_sends_the_local_token_only_through_the_socket(short_tmp: Path) -> None:
    data = short_tmp / "data"
    data.mkdir(mode=0o700)
    (data / "api-token").write_text("local-token\n")
    # No socket (the orchestrator is down, and another process may hold its port): nothing is sent.
    down = route("http://127.0.0.1:8080", None, data)
    assert down.token is None and down.socket is None and "api.sock" in (down.refusal or "")
    # No token file either (the prototype's tokenless mode): the URL as it is, without a token.
    assert route("http://127.0.0.1:8080", None, short_tmp) == Route("http://127.0.0.1:8080", None)
    sock = listen_private(data / "api.sock")
    try:
        up = route("http://127.0.0.1:8080", None, data)
        assert (up.base, up.socket, up.token) == (BASE_URL, str(data / "api.sock"), "local-token")
        assert route(f"unix://{data}/api.sock", None).token == "local-token"
        assert route(f"unix://{data}/api.sock", "given").token == "given"
        # A token given explicitly goes where the URL says; a remote URL never gets the local one.
        assert route("http://127.0.0.1:8080", "given", data) == route("http://127.0.0.1:8080", "given")
        assert route("http://127.0.0.1:8080", "given", data).socket is None
        assert route("https://node1.example.org", None, data).token is None
    finally:
        sock.close()


def test_the_healthcheck_uses_the_socket(short_tmp: Path) -> None:
    from ctl import healthcheck

    path = short_tmp / "api.sock"

    async def main() -> int:
        seen: list[str] = []
        runner = await _unix_app(path, seen)
        try:
            os.environ["MAO_TEST_HEALTH_TOKEN"] = "tok"
            code = await asyncio.to_thread(healthcheck.main, ["x", f"unix://{path}", "MAO_TEST_HEALTH_TOKEN"])
            assert seen == ["Bearer tok"]
            return code
        finally:
            os.environ.pop("MAO_TEST_HEALTH_TOKEN", None)
            await runner.cleanup()

    assert asyncio.run(main()) == 0
    started = time.monotonic()
    assert healthcheck.main(["x", f"unix://{path}"]) == 1  # nothing listens now
    assert time.monotonic() - started < 10
