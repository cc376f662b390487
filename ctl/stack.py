"""Running an install folder's compose stack with whichever compose the host has.

``docker compose`` (v2, the CLI plugin) is preferred; Debian 12's ``docker-compose`` (v1, 1.29) is
the fall-back. ``MAO_COMPOSE`` forces one (``docker-compose`` or ``docker compose``), e.g. to test v1 on a
host that has both. The compose file the installer writes works with both (see ctl/compose.py).

Always run in the install folder with its compose file named, so both flavours read the same ``.env``
(project name, images).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .compose import COMPOSE_FILE
from .env_files import PRIVATE_FILES


class StackError(Exception):
    """The stack cannot be handled here (no compose, no install folder, a compose command failed)."""


def _works(command: Sequence[str]) -> bool:
    try:
        done = subprocess.run(
            [*command, "version"], capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def compose_command() -> list[str]:
    """The compose command line prefix that works on this host; StackError naming both when neither does."""
    forced = os.environ.get("MAO_COMPOSE", "").strip()
    candidates = [shlex.split(forced)] if forced else [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if shutil.which(command[0]) and _works(command):
            return command
    raise StackError(
        "neither `docker compose` (v2) nor `docker-compose` (v1) works on this host"
        + (f" (MAO_COMPOSE={forced})" if forced else "")
        + "; install one (Debian: apt-get install docker-compose)"
    )


def start_hint(directory: Path) -> str:
    """The start command the operator can paste on this host (v2's form when no compose is found)."""
    try:
        command = compose_command()
    except StackError:
        command = ["docker", "compose"]
    return f"cd {shlex.quote(str(directory))} && {shlex.join(command)} up -d"


def check_install(directory: Path) -> None:
    for name in (COMPOSE_FILE, *PRIVATE_FILES):
        if not (directory / name).is_file():
            raise StackError(
                f"{directory} has no {name}: install an instance there first (maoctl instance install; "
                "run again over an older install, it keeps its secrets and writes each service's own file)"
            )


def run(directory: Path, *args: str, capture: bool = False, timeout: float = 900) -> str:
    """Run ``compose -f docker-compose.yaml ARGS`` in ``directory``; its output when ``capture``."""
    check_install(directory)
    command = [*compose_command(), "-f", COMPOSE_FILE, *args]
    try:
        done = subprocess.run(
            command,
            cwd=directory,
            # Not captured: compose's progress goes to our stderr, so stdout stays --json's alone.
            stdout=subprocess.PIPE if capture else 2,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"`{shlex.join(command)}` did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        detail = (done.stderr or "").strip()[-2000:] if capture else "see its output above"
        raise StackError(f"`{shlex.join(command)}` failed with exit code {done.returncode}: {detail}")
    return done.stdout or ""


@dataclass(frozen=True)
class ServiceState:
    service: str
    container: str
    state: str  # running, exited, restarting, ...
    health: str | None  # healthy, starting, unhealthy; None without a healthcheck

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in (None, "healthy")


def states(directory: Path) -> list[ServiceState]:
    """Each container of the stack with its state and health (empty when nothing was created)."""
    ids = run(directory, "ps", "-a", "-q", capture=True).split()
    if not ids:
        return []
    try:
        done = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise StackError(f"docker inspect failed: {exc}") from exc
    found = []
    for item in json.loads(done.stdout):
        labels = item.get("Config", {}).get("Labels") or {}
        state = item.get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        found.append(
            ServiceState(
                service=labels.get("com.docker.compose.service", "?"),
                container=str(item.get("Name", "")).lstrip("/"),
                state=str(state.get("Status", "unknown")),
                health=health,
            )
        )
    return sorted(found, key=lambda s: s.service)


def wait_ready(directory: Path, timeout: float, expected: int = 4) -> list[ServiceState]:
    """Poll until ``expected`` services are running and healthy; the last states either way."""
    deadline = time.monotonic() + timeout
    while True:
        found = states(directory)
        if len(found) >= expected and all(s.ready for s in found):
            return found
        if time.monotonic() >= deadline:
            return found
        time.sleep(2)
