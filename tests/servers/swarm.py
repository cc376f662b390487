"""A single-node Docker Swarm on loopback, made of the machine's (shared) Docker engine.

``acquire_swarm()`` turns the engine into a swarm manager (``swarm init --advertise-addr 127.0.0.1
--listen-addr 127.0.0.1:2377``) unless it already is one, and ``release_swarm()`` leaves it as it was
found: a swarm the harness did not create is never left.

Several test sessions (other engineers' runs, a bench) share one engine at the same time. So init and
leave happen under an ``fcntl`` lock on a file in /tmp, and a state file next to it counts the holders
(pid and a random id each): the swarm is left only by the last holder, and only when a holder created
it. A holder whose process died (a killed session) is dropped from the count by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process import LOCALHOST, ServerStartError

LOCK_PATH = Path("/tmp/mao-test-swarm.lock")
STATE_PATH = Path("/tmp/mao-test-swarm.json")
LISTEN_PORT = 2377
# ``swarm init`` creates this bridge and ``swarm leave`` keeps it: removed again when init made it.
GWBRIDGE = "docker_gwbridge"


@dataclass(frozen=True)
class SwarmHold:
    """One holder's claim on the swarm: give it back with ``release_swarm``."""

    holder: str
    created: bool  # whether this engine was made a swarm by the harness (by this or another holder)


def _client() -> Any:
    import docker  # local import: keeps ``import tests.servers`` light

    return docker.from_env(timeout=60)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, 0o666)  # any user's session may take the lock (umask would narrow it)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_state() -> dict[str, Any]:
    try:
        state = json.loads(STATE_PATH.read_text())
    except (FileNotFoundError, ValueError):
        return {"created": False, "gwbridge": False, "holders": {}}
    state.setdefault("created", False)
    state.setdefault("gwbridge", False)
    state.setdefault("holders", {})
    return state


def _write_state(state: dict[str, Any]) -> None:
    tmp = STATE_PATH.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, STATE_PATH)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swarm_state(client: Any) -> tuple[str, bool]:
    info = client.info().get("Swarm") or {}
    return str(info.get("LocalNodeState") or "inactive"), bool(info.get("ControlAvailable"))


def _has_network(client: Any, name: str) -> bool:
    return any(net.name == name for net in client.networks.list(names=[name]))


def _remove_network(client: Any, name: str) -> None:
    import docker.errors

    for net in client.networks.list(names=[name]):
        if net.name == name:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                net.remove()  # APIError: something of someone else's uses it now: keep it


def acquire_swarm() -> SwarmHold:
    """Make sure the engine is a swarm manager and count this process as one of its holders."""
    client = _client()
    try:
        with _locked():
            state = _read_state()
            holders = {key: pid for key, pid in state["holders"].items() if _alive(int(pid))}
            node_state, manager = _swarm_state(client)
            if node_state == "active" and not manager:
                raise ServerStartError(
                    "the Docker engine is a swarm worker, not a manager: the swarm tests need a manager"
                )
            if node_state != "active":
                if node_state != "inactive":
                    raise ServerStartError(f"the Docker engine's swarm state is {node_state!r}; try later")
                had_bridge = _has_network(client, GWBRIDGE)
                client.swarm.init(
                    advertise_addr=LOCALHOST,
                    listen_addr=f"{LOCALHOST}:{LISTEN_PORT}",
                    force_new_cluster=False,
                )
                created = True
                state["gwbridge"] = not had_bridge
            else:
                # A swarm is there: ours if a holder (alive or crashed) recorded creating it, else found.
                created = bool(state["created"])
            holder = f"{os.getpid()}-{secrets.token_hex(4)}"
            holders[holder] = os.getpid()
            _write_state({"created": created, "gwbridge": bool(state["gwbridge"]), "holders": holders})
            return SwarmHold(holder, created)
    finally:
        client.close()


def release_swarm(hold: SwarmHold) -> None:
    """Drop this holder; the last holder leaves the swarm when the harness created it."""
    client = _client()
    try:
        with _locked():
            state = _read_state()
            holders = {
                key: pid for key, pid in state["holders"].items() if key != hold.holder and _alive(int(pid))
            }
            if holders:
                _write_state({**state, "holders": holders})
                return
            if state["created"]:
                node_state, _ = _swarm_state(client)
                if node_state == "active":
                    client.swarm.leave(force=True)
                if state["gwbridge"]:
                    _remove_network(client, GWBRIDGE)
            STATE_PATH.unlink(missing_ok=True)
    finally:
        client.close()


def renew_swarm(hold: SwarmHold) -> bool:
    """Leave and init again (an empty store: Docker 20.10 keeps every finished job's task record,
    moby#44312, and slows down as they pile up), only when ``hold`` is the only holder of a swarm the
    harness made. Returns whether it did."""
    client = _client()
    try:
        with _locked():
            state = _read_state()
            holders = {key: pid for key, pid in state["holders"].items() if _alive(int(pid))}
            if not state["created"] or set(holders) != {hold.holder}:
                return False
            client.swarm.leave(force=True)
            client.swarm.init(advertise_addr=LOCALHOST, listen_addr=f"{LOCALHOST}:{LISTEN_PORT}")
            return True
    finally:
        client.close()


@contextlib.contextmanager
def single_node_swarm() -> Iterator[SwarmHold]:
    """``acquire_swarm`` ... ``release_swarm`` (for scripts and the bench)."""
    hold = acquire_swarm()
    try:
        yield hold
    finally:
        release_swarm(hold)
