"""Launchers for the executor and the orchestrator, as real subprocesses."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .process import LOCALHOST, REPO_ROOT, ManagedProcess, ServerStartError, free_port, wait_http

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
