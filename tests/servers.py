"""Real servers for integration tests and bench scripts: etcd, dockerd, PostgreSQL, executor, orchestrator.

Importable without pytest (``from tests.servers import start_etcd``). Every helper starts REAL
components as subprocesses (argument lists only, never a shell), writes their output to a log
file, and raises :class:`ServerStartError` with the last lines of that log when something does
not come up. Everything started here is also registered for clean-up at interpreter exit.
"""

from __future__ import annotations

import atexit
import glob
import io
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
LOG_TAIL_LINES = 40

__all__ = [
    "REPO_ROOT",
    "EtcdServer",
    "ManagedProcess",
    "PostgresServer",
    "ServerStartError",
    "ServiceProcess",
    "build_busybox_image",
    "ensure_docker",
    "free_port",
    "http_status",
    "is_root",
    "start_etcd",
    "start_etcd_cluster",
    "start_executor",
    "start_orchestrator",
    "start_postgres",
    "stop_docker",
    "wait_http",
    "wait_until",
]


class ServerStartError(RuntimeError):
    """A server could not be started; the message names it and carries the tail of its log."""


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def is_root() -> bool:
    return os.geteuid() == 0


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (sockets kept open while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOCALHOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """Call ``predicate`` until it returns a truthy value, which is returned.

    Exceptions raised by the predicate count as "not yet" (except :class:`ServerStartError`,
    which propagates at once); the last one is named in the TimeoutError raised after
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ServerStartError:  # fatal: e.g. the awaited process died
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure just means "not yet"
            last_exc = exc
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last_exc).__name__}: {last_exc})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def http_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int | None:
    """HTTP status of a GET on ``url``, or None when nothing answers (refused, reset, timeout)."""
    request = urllib.request.Request(url, headers=dict(headers or {}), method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - test URLs
            return response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_http(
    url: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    process: ManagedProcess | None = None,
) -> int:
    """Wait until ``url`` answers with any HTTP status and return that status.

    When ``process`` is given and it exits meanwhile, fail at once with its log tail.
    """

    def probe() -> int | None:
        if process is not None and not process.alive:
            raise ServerStartError(
                f"{process.name} exited with code {process.returncode} before {url} answered"
                f"{process.log_tail_block()}"
            )
        return http_status(url, headers=headers, timeout=2.0)

    deadline = time.monotonic() + timeout
    while True:
        status = probe()
        if status is not None:
            return status
        if time.monotonic() >= deadline:
            tail = process.log_tail_block() if process is not None else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for HTTP answer from {url}{tail}")
        time.sleep(0.1)


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _read_tail(path: Path | str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return _tail(Path(path).read_text(errors="replace"), lines)
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def _run(
    args: Sequence[str], what: str, timeout: float = 120.0, **kwargs: Any
) -> subprocess.CompletedProcess:
    """Run a short command (argument list), raising ServerStartError with its output on failure."""
    try:
        proc = subprocess.run(
            list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kwargs
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerStartError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        raise ServerStartError(
            f"{what} failed with exit code {proc.returncode}: {' '.join(args)}\n--- output ---\n{_tail(proc.stdout)}"
        )
    return proc


# ---------------------------------------------------------------------------------------------
# clean-up registry
# ---------------------------------------------------------------------------------------------

_cleanup_lock = threading.Lock()
_to_cleanup: list[Any] = []  # objects with a .stop() method, stopped in reverse order at exit


def _register(obj: Any) -> None:
    with _cleanup_lock:
        if obj not in _to_cleanup:
            _to_cleanup.append(obj)


def _unregister(obj: Any) -> None:
    with _cleanup_lock:
        if obj in _to_cleanup:
            _to_cleanup.remove(obj)


@atexit.register
def _cleanup_all() -> None:
    with _cleanup_lock:
        objs = list(reversed(_to_cleanup))
    for obj in objs:
        try:
            obj.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# ---------------------------------------------------------------------------------------------
# ManagedProcess
# ---------------------------------------------------------------------------------------------


class ManagedProcess:
    """A long-running subprocess with its stdout+stderr appended to ``log_path``.

    The process runs in its own session/process group, so :meth:`kill` also takes down any
    children. :meth:`restart` runs the same command again (same env, cwd, log file).
    """

    def __init__(
        self,
        args: Sequence[str],
        log_path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
        start: bool = True,
    ) -> None:
        if isinstance(args, str):
            raise TypeError("ManagedProcess takes an argument list, not a command string")
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = str(cwd) if cwd is not None else None
        self.name = name or Path(self.args[0]).name
        self.starts = 0
        self._popen: subprocess.Popen | None = None
        if start:
            self.start()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(f"=== [{stamp}] start #{self.starts}: {' '.join(self.args)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    self.args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServerStartError(f"cannot start {self.name}: {exc}") from exc
        _register(self)
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code (None if never started)."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            try:
                popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._killpg()
                popen.wait(timeout=30)
        self._killpg()  # stragglers left in the group
        _unregister(self)
        return popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the process and its group at once (crash simulation). Returns the exit code."""
        popen = self._popen
        if popen is None:
            return None
        self._killpg()
        popen.wait(timeout=30)
        _unregister(self)
        return popen.returncode

    def restart(self, timeout: float = 15.0) -> ManagedProcess:
        """Stop (gracefully) if running, then start the same command again."""
        self.stop(timeout)
        return self.start()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit by itself and return its code."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.wait(timeout=timeout)

    def _killpg(self) -> None:
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    # -- state ----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_text(), lines)

    def log_tail_block(self, lines: int = LOG_TAIL_LINES) -> str:
        return f"\n--- last {lines} lines of {self.log_path} ---\n{self.log_tail(lines)}"

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"


# ---------------------------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------------------------


def _etcd_binary() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if not path:
        raise ServerStartError("etcd binary not found (install Debian package etcd-server)")
    return path


class EtcdServer:
    """One etcd member on loopback; ``initial_cluster`` defaults to just this member."""

    def __init__(
        self,
        tmpdir: str | os.PathLike[str],
        name: str = "etcd0",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_state: str = "new",
        cluster_token: str = "mao-test-cluster",
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
    ) -> None:
        self.name = name
        self.dir = Path(tmpdir) / name
        self.data_dir = self.dir / "data"
        if client_port is None or peer_port is None:
            spare = [p for p in _free_ports(3) if p not in (client_port, peer_port)]
            client_port = client_port or spare.pop(0)
            peer_port = peer_port or spare.pop(0)
        self.host = LOCALHOST
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_state = cluster_state
        self.cluster_token = cluster_token
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    def command(self) -> list[str]:
        return [
            _etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", self.cluster_token,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    def start(self, wait: bool = True, timeout: float = 30.0) -> EtcdServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for key in list(env):  # a stray ETCD_* in the environment would change the flags
            if key.startswith("ETCD_"):
                del env[key]
        self.process = ManagedProcess(
            self.command(), self.log_path, env=env, cwd=self.dir, name=f"etcd {self.name}"
        )
        if wait:
            self.wait_healthy(timeout)
        return self

    def is_healthy(self) -> bool:
        request = urllib.request.Request(f"{self.client_url}/health")
        try:
            with urllib.request.urlopen(request, timeout=2.0) as response:  # noqa: S310
                body = response.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return False
        return '"health":"true"' in body.replace(" ", "")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            if self.process is not None and not self.process.alive:
                raise ServerStartError(
                    f"etcd member {self.name} exited with code {self.process.returncode}"
                    f"{self.process.log_tail_block()}"
                )
            return self.is_healthy()

        try:
            wait_until(healthy, timeout=timeout, interval=0.1, what=f"etcd member {self.name} healthy")
        except ServerStartError:
            raise
        except TimeoutError as exc:
            tail = self.process.log_tail_block() if self.process else ""
            raise ServerStartError(f"{exc} at {self.client_url}/health{tail}") from exc

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def destroy(self) -> None:
        """Kill the member and delete its folder (data dir with a 64 MB WAL, and its log)."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, wait: bool = True, timeout: float = 30.0) -> EtcdServer:
        """Start again on the same ports and data dir (stopping it first if it runs)."""
        if self.process is None:
            return self.start(wait, timeout)
        self.process.restart()
        if wait:
            self.wait_healthy(timeout)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def __repr__(self) -> str:
        return f"<EtcdServer {self.name} {self.endpoint} alive={self.alive}>"


def start_etcd(
    tmpdir: str | os.PathLike[str],
    name: str = "etcd0",
    client_port: int | None = None,
    peer_port: int | None = None,
    initial_cluster: str | None = None,
    cluster_state: str = "new",
    timeout: float = 30.0,
) -> EtcdServer:
    """Start one etcd member and wait until ``/health`` says healthy."""
    server = EtcdServer(
        tmpdir,
        name=name,
        client_port=client_port,
        peer_port=peer_port,
        initial_cluster=initial_cluster,
        cluster_state=cluster_state,
    )
    return server.start(wait=True, timeout=timeout)


def start_etcd_cluster(
    tmpdir: str | os.PathLike[str],
    n: int = 3,
    name_prefix: str = "etcd",
    timeout: float = 60.0,
) -> list[EtcdServer]:
    """Start ``n`` members on loopback forming one new cluster; wait until all are healthy."""
    ports = _free_ports(2 * n)
    names = [f"{name_prefix}{i}" for i in range(n)]
    initial = ",".join(f"{nm}=http://{LOCALHOST}:{ports[2 * i + 1]}" for i, nm in enumerate(names))
    token = f"mao-test-{secrets.token_hex(4)}"
    members = [
        EtcdServer(
            tmpdir,
            name=nm,
            client_port=ports[2 * i],
            peer_port=ports[2 * i + 1],
            initial_cluster=initial,
            cluster_state="new",
            cluster_token=token,
        )
        for i, nm in enumerate(names)
    ]
    try:
        for member in members:  # all must run before any can elect a leader
            member.start(wait=False)
        for member in members:
            member.wait_healthy(timeout)
    except BaseException:
        for member in members:
            member.kill()
        raise
    return members


# ---------------------------------------------------------------------------------------------
# Docker
# ---------------------------------------------------------------------------------------------


def _docker_client(timeout: int = 10):
    import docker  # local import: keeps ``import tests.servers`` light

    return docker.from_env(timeout=timeout)


def docker_ping() -> bool:
    """True when the Docker engine answers (via the SDK, whatever DOCKER_HOST says)."""
    try:
        client = _docker_client(timeout=5)
    except Exception:  # noqa: BLE001 - docker.errors.DockerException and socket errors
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def ensure_docker(
    log_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> tuple[bool, ManagedProcess | None]:
    """Make sure a Docker engine answers.

    Returns ``(started, handle)``: ``started`` is True when we launched ``dockerd`` ourselves
    (``dockerd --iptables=false --bridge=none``), and ``handle`` is its ManagedProcess, to be
    passed to :func:`stop_docker` at the end. When an engine already answered: ``(False, None)``.
    ``extra_args`` are appended to the dockerd command (e.g. ``-H``/``--data-root`` for a
    private daemon; the SDK client then needs a matching DOCKER_HOST).
    """
    if docker_ping():
        return False, None
    dockerd = shutil.which("dockerd") or (
        "/usr/sbin/dockerd" if os.path.exists("/usr/sbin/dockerd") else None
    )
    if not dockerd:
        raise ServerStartError(
            "Docker engine not reachable and dockerd not found (install Debian package docker.io)"
        )
    if not is_root():
        raise ServerStartError("Docker engine not reachable, and starting dockerd needs root")
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="mao-dockerd-"))
    env = dict(os.environ)
    # dockerd needs the sbin directories for its helpers (containerd, runc, ...)
    path = env.get("PATH", "")
    for extra in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if extra not in path.split(":"):
            path = f"{path}:{extra}" if path else extra
    env["PATH"] = path
    proc = ManagedProcess(
        [dockerd, "--iptables=false", "--bridge=none", *extra_args],
        log_dir / "dockerd.log",
        env=env,
        name="dockerd",
    )

    def up() -> bool:
        if not proc.alive:
            raise ServerStartError(f"dockerd exited with code {proc.returncode}{proc.log_tail_block()}")
        return docker_ping()

    try:
        wait_until(up, timeout=timeout, interval=0.25, what="dockerd to answer")
    except ServerStartError:
        proc.kill()
        raise
    except TimeoutError as exc:
        proc.stop(timeout=20)
        raise ServerStartError(f"{exc}{proc.log_tail_block()}") from exc
    return True, proc


def stop_docker(handle: ManagedProcess | None, timeout: float = 30.0) -> None:
    """Stop a dockerd that :func:`ensure_docker` started (no-op for None)."""
    if handle is not None:
        handle.stop(timeout)


def _busybox_tar(busybox_path: str) -> bytes:
    listing = _run([busybox_path, "--list"], "busybox --list", timeout=30).stdout
    applets = sorted({a.strip() for a in listing.split() if a.strip() and "/" not in a})
    buf = io.BytesIO()
    now = int(time.time())

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = now
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = now
        tar.addfile(info, io.BytesIO(data))

    def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        info.mtime = now
        tar.addfile(info)

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "usr", "usr/bin", "usr/src", "usr/src/app", "root", "proc", "sys", "dev"):
            add_dir(tar, d, 0o700 if d == "root" else 0o755)
        add_dir(tar, "tmp", 0o1777)
        add_file(tar, "bin/busybox", Path(busybox_path).read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                add_symlink(tar, f"bin/{applet}", "busybox")
        add_symlink(tar, "usr/bin/env", "/bin/busybox")
        add_file(
            tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


BUSYBOX_LABEL = "org.mao.harness.busybox"
BUSYBOX_LABEL_VERSION = "1"


def build_busybox_image(
    tag: str = "busybox:latest",
    busybox_path: str = "/usr/bin/busybox",
    client=None,
    rebuild: bool = False,
) -> str:
    """Return the id of image ``tag``, building it offline from the host's static busybox if needed.

    An existing image is reused when it carries this harness's label; a missing one, or an
    image of that tag made some other way (e.g. without /tmp or /usr/src/app), is (re)built
    and the tag moved to the new image. ``rebuild=True`` always builds.
    """
    import docker

    own_client = client is None
    client = client or _docker_client(timeout=120)
    try:
        if not rebuild:
            try:
                image = client.images.get(tag)
            except docker.errors.ImageNotFound:
                image = None
            if image is not None and (image.labels or {}).get(BUSYBOX_LABEL) == BUSYBOX_LABEL_VERSION:
                return image.id
        if not os.path.exists(busybox_path):
            raise ServerStartError(f"{busybox_path} not found (install Debian package busybox-static)")
        last = tag.rsplit("/", 1)[-1]
        repository, image_tag = tag.rsplit(":", 1) if ":" in last else (tag, "latest")
        client.api.import_image_from_data(
            _busybox_tar(busybox_path),
            repository=repository,
            tag=image_tag,
            changes=[
                "ENV PATH=/bin:/usr/bin",
                f"LABEL {BUSYBOX_LABEL}={BUSYBOX_LABEL_VERSION}",
                'CMD ["sh"]',
            ],
        )
        return client.images.get(tag).id
    finally:
        if own_client:
            client.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _postgres_bindir() -> Path:
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    if candidates:
        return Path(max(candidates, key=version)).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise ServerStartError(
        "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (install postgresql)"
    )


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1:<port> with role ``mao`` and database ``mao``.

    When running as root, the cluster lives in its own /tmp folder owned by ``postgres`` (the
    server refuses to run as root, and pytest's tmp folders are not readable by other users);
    the server binaries then run via ``runuser -u postgres --``.
    """

    user = "mao"
    database = "mao"

    def __init__(self, tmpdir: str | os.PathLike[str] | None = None, port: int | None = None) -> None:
        self.bindir = _postgres_bindir()
        self.port = port or free_port()
        self.host = LOCALHOST
        self.password = secrets.token_hex(12)
        self.as_root = is_root()
        self._own_base = False
        if self.as_root or tmpdir is None:
            self.base = Path(tempfile.mkdtemp(prefix="mao-pg-"))
            self._own_base = True
        else:
            self.base = Path(tmpdir) / "postgres"
            self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base / "data"
        self.socket_dir = self.base / "sock"
        if len(str(self.socket_dir)) > 80:  # unix socket paths are limited to ~107 bytes
            self.socket_dir = Path(tempfile.mkdtemp(prefix="mao-pgs-"))
        self.log_path = self.base / "postgres.log"
        self.running = False

    # -- helpers ---------------------------------------------------------------------------
    def _as_pg(self, args: Sequence[str]) -> list[str]:
        args = [str(a) for a in args]
        return ["runuser", "-u", "postgres", "--", *args] if self.as_root else args

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def log_tail_block(self, lines: int = LOG_TAIL_LINES) -> str:
        return f"\n--- last {lines} lines of {self.log_path} ---\n{_read_tail(self.log_path, lines)}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as the superuser over the unix socket; return its output."""
        args = [
            self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database,
            "-c", sql,
        ]  # fmt: skip
        return _run(self._as_pg(args), f"psql {sql!r}", timeout=60, cwd=str(self.base)).stdout

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> PostgresServer:
        for d in (self.base, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            for d in (self.base, self.socket_dir):
                shutil.chown(d, "postgres", "postgres")
                os.chmod(d, 0o700)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            _run(
                self._as_pg([
                    self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--no-locale", "--no-sync",
                ]),
                "initdb",
                timeout=180,
                cwd=str(self.base),
            )  # fmt: skip
        options = " ".join([
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            f"-c listen_addresses={self.host}",
            "-c max_connections=300",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ])  # fmt: skip
        try:
            _run(
                self._as_pg([
                    self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                    "-o", options, "-w", "-t", str(int(timeout)), "start",
                ]),
                "pg_ctl start",
                timeout=timeout + 30,
                cwd=str(self.base),
            )  # fmt: skip
        except ServerStartError as exc:
            raise ServerStartError(f"PostgreSQL could not start: {exc}{self.log_tail_block()}") from exc
        self.running = True
        _register(self)
        if not fresh:  # resumed after stop(keep_data=True): role and database exist
            return self
        try:
            self.psql(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
            self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}")
        except ServerStartError as exc:
            self.stop()
            raise ServerStartError(f"PostgreSQL setup failed: {exc}{self.log_tail_block()}") from exc
        return self

    def stop(self, timeout: float = 30.0, keep_data: bool = False) -> None:
        """Stop the server; with ``keep_data`` a later start() resumes the same cluster."""
        if self.running:
            try:
                _run(
                    self._as_pg([self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                                 "-t", str(int(timeout)), "stop"]),
                    "pg_ctl stop",
                    timeout=timeout + 30,
                    cwd=str(self.base),
                )  # fmt: skip
            except ServerStartError:
                self._kill_postmaster()
            self.running = False
        if keep_data:
            return
        _unregister(self)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)
        if not str(self.socket_dir).startswith(str(self.base)):
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    # -- URLs ---------------------------------------------------------------------------------
    def url_for(self, database: str) -> str:
        """SQLAlchemy async URL for ``database`` as role mao."""
        return f"postgresql+asyncpg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def dsn_for(self, database: str) -> str:
        """Plain libpq/asyncpg DSN for ``database`` as role mao."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def create_database(self, name: str) -> str:
        """(Re)create an empty database ``name`` owned by mao and return its SQLAlchemy URL.

        An existing database of that name is dropped first, so each caller gets a fresh one.
        """
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"bad database name {name!r}: use lower-case letters, digits and _")
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return self.url_for(name)

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} running={self.running}>"


def start_postgres(tmpdir: str | os.PathLike[str] | None = None, port: int | None = None) -> PostgresServer:
    """initdb + start a private PostgreSQL; ``.url`` is ready for SQLAlchemy (asyncpg)."""
    return PostgresServer(tmpdir, port=port).start()


# ---------------------------------------------------------------------------------------------
# executor / orchestrator launchers
# ---------------------------------------------------------------------------------------------


class ServiceProcess:
    """A started executor or orchestrator: ``url``, ``token``, ``port``, ``env`` and its process."""

    def __init__(self, name: str, process: ManagedProcess, url: str, token: str | None, env: dict[str, str]):
        self.name = name
        self.process = process
        self.url = url
        self.token = token
        self.env = env
        self.port = int(url.rsplit(":", 1)[1])

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
    """Run ``python -m executor`` on 127.0.0.1 and wait until ``GET /health`` answers."""
    env = _base_env()
    token = token or secrets.token_hex(16)
    port = port or free_port()
    env.update(
        {
            "MAO_EXECUTOR_TOKEN": token,
            "MAO_EXECUTOR_HOST": LOCALHOST,
            "MAO_EXECUTOR_PORT": str(port),
            "MAO_INSTANCE_NAME": name,
        }
    )
    env.update({k: str(v) for k, v in (env_overrides or {}).items()})
    host = env["MAO_EXECUTOR_HOST"]
    port = int(env["MAO_EXECUTOR_PORT"])
    return _launch(
        "executor", name, env, f"http://{host}:{port}", env["MAO_EXECUTOR_TOKEN"], log_dir, timeout
    )


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
    """
    full_env = _base_env()
    full_env.update({k: str(v) for k, v in env.items()})
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
    return _launch("orchestrator", name, full_env, url, token, log_dir, timeout)
