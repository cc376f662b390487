"""Processes the harness starts and waits for: free ports, waiting, logs, and ManagedProcess."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCALHOST = "127.0.0.1"
LOG_TAIL_LINES = 40


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
