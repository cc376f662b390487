"""Launchers for the executor and the orchestrator, as real subprocesses."""

from __future__ import annotations

import atexit
import http.client
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from ctl.local_socket import BASE_URL, SocketAdapter
from executor.transport import UnixHTTPConnection, trusted_uids, unix_socket_path

from .process import LOCALHOST, REPO_ROOT, ManagedProcess, ServerStartError, free_port, is_root, wait_http

# ---------------------------------------------------------------------------------------------
# executor / orchestrator launchers
# ---------------------------------------------------------------------------------------------


# The MAO_INSTANCE_NAME of every executor the tests started: the containers they submitted outlive
# them by design (executor/containers.py), so the session removes them at its end
# (``remove_submitted``).
EXECUTOR_INSTANCES: set[str] = set()


def remove_submitted(client: object) -> list[str]:
    """Remove every container an executor of this session submitted (``mao.executor`` label):
    attempts that nodes stopped mid-run left for an adoption that never comes."""
    removed = []
    for instance in sorted(EXECUTOR_INSTANCES):
        for container in client.containers.list(  # type: ignore[attr-defined]
            all=True, ignore_removed=True, filters={"label": f"mao.executor={instance}"}
        ):
            try:
                container.remove(force=True)
                removed.append(container.name)
            except Exception:  # noqa: BLE001 - already gone
                pass
    return removed


# The API token of every orchestrator the tests started, by URL: ``tests.api.Api(url)`` and the maoctl
# helpers look it up here, so a test that only knows a node's URL still talks to it with its token.
TOKENS: dict[str, str] = {}


def token_for(url: str) -> str | None:
    return TOKENS.get(url.rstrip("/"))


class ServiceProcess:
    """A started executor or orchestrator: ``url``, ``token``, ``port``, ``env`` and its process.

    An executor listens on a Unix socket by default: ``url`` is then ``unix:///path`` (what the
    orchestrator's MAO_EXECUTOR_URL takes), ``socket`` the path, and ``request`` talks HTTP to it.

    An orchestrator started without MAO_API_TOKEN (and not in legacy open mode) generates its token
    into its data dir; ``token`` then reads it from there."""

    def __init__(self, name: str, process: ManagedProcess, url: str, token: str | None, env: dict[str, str]):
        self.name = name
        self.process = process
        self.url = url
        self._token = token
        self.env = env
        self.socket = unix_socket_path(url)
        self.port = int(url.rsplit(":", 1)[1]) if self.socket is None else 0
        self._session: requests.Session | None = None

    @property
    def base(self) -> str:
        """The URL requests are made on (over the socket, a fixed host name)."""
        return BASE_URL if self.socket is not None else self.url

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            if self.socket is not None:
                self._session.trust_env = False
                self._session.mount("http://", SocketAdapter(self.socket))
        return self._session

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``method path`` on this service, over its socket or its URL (no token unless given)."""
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.base + path, **kwargs)

    @property
    def token(self) -> str | None:
        if self._token is None and self.env.get("MAO_DATA_DIR") and not self.env.get("MAO_API_LEGACY_OPEN"):
            try:
                self._token = (Path(self.env["MAO_DATA_DIR"]) / "api-token").read_text().strip() or None
            except OSError:
                return None
            if self._token:
                TOKENS[self.url] = self._token
        return self._token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    def wait_ready(self, timeout: float = 60.0) -> int:
        try:
            if self.socket is not None:
                return _wait_socket(self.socket, self.headers, timeout, self.process)
            if self.url.startswith("https://"):
                return _wait_tls(self.url, self.headers, timeout, self.process)
            return wait_http(
                f"{self.url}/health", headers=self.headers, timeout=timeout, process=self.process
            )
        except TimeoutError as exc:
            raise ServerStartError(f"{self.name}: {exc}") from exc

    def stop(self, timeout: float = 15.0) -> int | None:
        return self.process.stop(timeout)

    def kill(self) -> int | None:
        return self.process.kill()

    def restart(self, timeout: float = 60.0) -> ServiceProcess:
        self.process.restart()
        self.wait_ready(timeout)
        return self

    def log_text(self) -> str:
        return self.process.log_text()

    def __repr__(self) -> str:
        return f"<ServiceProcess {self.name} {self.url} alive={self.alive}>"


def _wait_socket(path: str, headers: dict[str, str], timeout: float, process: ManagedProcess) -> int:
    """Wait until the server on the socket ``path`` answers ``GET /health`` (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive:
            raise ServerStartError(
                f"{process.name} exited with code {process.returncode} before {path} answered"
                f"{process.log_tail_block()}"
            )
        connection = UnixHTTPConnection(path, trusted_uids(), timeout=2.0)
        try:
            connection.request("GET", "/health", headers=headers)
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:g}s waiting for an answer on {path}{process.log_tail_block()}"
            )
        time.sleep(0.1)


def _wait_tls(url: str, headers: dict[str, str], timeout: float, process: ManagedProcess) -> int:
    """Wait until the TLS server at ``url`` answers ``GET /health``: its certificate is its own (the
    tests that start one pin it), so it is not verified here, and no token is sent."""
    host, _, port = url.removeprefix("https://").rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive:
            raise ServerStartError(
                f"{process.name} exited with code {process.returncode} before {url} answered"
                f"{process.log_tail_block()}"
            )
        connection = http.client.HTTPSConnection(host, int(port), timeout=2.0, context=context)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {url}{process.log_tail_block()}")
        time.sleep(0.1)


def _launch(
    module: str,
    name: str,
    env: dict[str, str],
    url: str,
    token: str | None,
    log_dir: str | os.PathLike[str] | None,
    timeout: float,
) -> ServiceProcess:
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix=f"mao-{module}-"))
    process = ManagedProcess(
        [sys.executable, "-m", module], log_dir / f"{name}.log", env=env, cwd=REPO_ROOT, name=name
    )
    service = ServiceProcess(name, process, url, token, env)
    try:
        service.wait_ready(timeout)
    except BaseException:
        process.kill()
        raise
    return service


def _base_env() -> dict[str, str]:
    """The current environment (PATH, HOME, ...) without any MAO_* variable of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAO_")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_executor(
    env_overrides: Mapping[str, str] | None = None,
    token: str | None = None,
    port: int | None = None,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    name: str = "executor",
    timeout: float = 60.0,
) -> ServiceProcess:
    """Run ``python -m executor`` and wait until ``GET /health`` answers.

    It listens as an installed one does, on a Unix socket (in a fresh private folder here, so that
    executors never share one), unless ``env_overrides`` sets MAO_EXECUTOR_LISTEN (``tcp``: plain
    HTTP on 127.0.0.1, ``tls``). Its data root (the folders it mounts) defaults to the system's
    temporary folder, where the tests' data dirs are; its tool user is the one an orchestrator of this
    test process sends (65534 when root, else this process's own uid:gid)."""
    env = _base_env()
    token = token or secrets.token_hex(16)
    port = port or free_port()
    env.update(
        {
            "MAO_EXECUTOR_TOKEN": token,
            "MAO_EXECUTOR_HOST": LOCALHOST,
            "MAO_EXECUTOR_PORT": str(port),
            "MAO_INSTANCE_NAME": name,
            "MAO_EXECUTOR_DATA_ROOT": tempfile.gettempdir(),
        }
    )
    if not is_root():
        env.update({"MAO_TOOL_UID": str(os.getuid()), "MAO_TOOL_GID": str(os.getgid())})
    env.update({k: str(v) for k, v in (env_overrides or {}).items()})
    EXECUTOR_INSTANCES.add(env["MAO_INSTANCE_NAME"])
    listen = env.get("MAO_EXECUTOR_LISTEN", "unix")
    if listen == "unix" and "MAO_EXECUTOR_SOCKET" not in env:
        # A short path of its own (a socket address holds 107 bytes), removed when the tests end.
        folder = tempfile.mkdtemp(prefix="mao-ex-")
        atexit.register(shutil.rmtree, folder, True)
        env["MAO_EXECUTOR_SOCKET"] = str(Path(folder) / "executor.sock")
        url = f"unix://{env['MAO_EXECUTOR_SOCKET']}"
    else:
        scheme = "https" if listen == "tls" else "http"
        url = f"{scheme}://{env['MAO_EXECUTOR_HOST']}:{env['MAO_EXECUTOR_PORT']}"
    return _launch("executor", name, env, url, env["MAO_EXECUTOR_TOKEN"], log_dir, timeout)


def start_orchestrator(
    env: Mapping[str, str],
    port: int | None = None,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    timeout: float = 60.0,
) -> ServiceProcess:
    """Run ``python -m orchestrator`` with ``env`` (MAO_* variables) on top of the current environment.

    MAO_API_HOST defaults to 127.0.0.1 and MAO_API_PORT to ``port`` (or a free one). Waits until
    ``GET /health`` answers (with ``Authorization: Bearer $MAO_API_TOKEN`` when set).

    Every node gets an API token: a random MAO_API_TOKEN unless ``env`` gives one, sets
    MAO_API_LEGACY_OPEN, or sets MAO_API_TOKEN to "" (then the node generates its own token file,
    which ``ServiceProcess.token`` reads). MAO_MASTER_ROOTS defaults to the folder holding the data
    dir: test nodes keep their data dirs side by side and use each other's local masters.
    """
    full_env = _base_env()
    full_env.update({k: str(v) for k, v in env.items()})
    if "MAO_API_TOKEN" not in env and not full_env.get("MAO_API_LEGACY_OPEN"):
        full_env["MAO_API_TOKEN"] = secrets.token_hex(16)
    if full_env.get("MAO_DATA_DIR") and "MAO_MASTER_ROOTS" not in env:
        full_env["MAO_MASTER_ROOTS"] = str(Path(full_env["MAO_DATA_DIR"]).parent)
    full_env.setdefault("MAO_API_HOST", LOCALHOST)
    if port is not None:
        full_env["MAO_API_PORT"] = str(port)
    elif not full_env.get("MAO_API_PORT"):
        full_env["MAO_API_PORT"] = str(free_port())
    name = name or f"orchestrator-{full_env.get('MAO_INSTANCE_NAME', 'default')}"
    host = full_env["MAO_API_HOST"]
    if host in ("0.0.0.0", ""):
        host = LOCALHOST
    url = f"http://{host}:{full_env['MAO_API_PORT']}"
    token = full_env.get("MAO_API_TOKEN") or None
    if token:
        TOKENS[url] = token
    return _launch("orchestrator", name, full_env, url, token, log_dir, timeout)
