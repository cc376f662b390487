"""Who is in the federation: live instances with their leases, and etcd's members with their health."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

from orchestrator.federation import keys
from tests import servers

from .conftest import LABELS, MEMBER_TTL, Federation


def instance_names(federation: Federation) -> list[str]:
    return [i["name"] for i in federation.b.api.ok(federation.b.api.get("/federation/members"))["instances"]]


@contextlib.contextmanager
def lease_kept_alive(federation: Federation, key: str) -> Iterator[None]:
    """Keep the lease ``key`` is bound to alive from outside (etcd's keep-alive, once a second, as its
    holder's heartbeat would) until the block ends or the lease is revoked: a killed instance's key
    is then still held by its old lease when it comes back, however long its restart takes."""
    member = next(m for m in federation.etcd if m.alive)
    lease = member.lease_of(key)
    assert lease is not None, f"{key} is on no lease"
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                if not member.keep_lease_alive(lease):
                    return  # revoked (taken over): nothing left to keep
            stop.wait(1.0)

    thread = threading.Thread(target=beat, name=f"keep {key} alive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def test_members_lists_instances_and_etcd(federation: Federation) -> None:
    body = federation.a.api.ok(federation.a.api.get("/federation/members"))
    instances = {i["name"]: i for i in body["instances"]}
    assert sorted(instances) == sorted(LABELS)
    for name, node in federation.nodes.items():
        record = instances[name]
        assert record["api_url"] == node.service.url
        assert record["labels"] == dict(item.split("=") for item in LABELS[name].split(","))
        assert record["version"] and record["started_at"].startswith("20")
        assert set(record) == {"name", "api_url", "version", "labels", "started_at"}
    assert sorted(m["name"] for m in body["etcd"]) == [m.name for m in federation.etcd]
    for member in body["etcd"]:
        assert member["healthy"] is True and member["peer_urls"] and member["client_urls"]
        assert isinstance(member["id"], str) and int(member["id"], 16)


def test_a_name_held_by_a_live_instance_is_refused(federation: Federation, servers_tmp) -> None:
    holder = federation.b
    started_at = next(
        i["started_at"]
        for i in holder.api.ok(holder.api.get("/federation/members"))["instances"]
        if i["name"] == holder.name
    )
    env = {**servers._base_env(), **holder.service.env}
    env.update(MAO_DATA_DIR=str(servers_tmp / "impostor"), MAO_API_PORT=str(servers.free_port()))
    impostor = servers.ManagedProcess(
        [sys.executable, "-m", "orchestrator"],
        servers_tmp / "logs" / "impostor.log",
        env=env,
        cwd=servers.REPO_ROOT,
        name="impostor",
    )
    code = impostor.wait(timeout=60)
    log = impostor.log_text()
    assert code == 3, log
    assert f"instance name '{holder.name}' is held by a live instance at {holder.service.url}" in log
    assert started_at in log
    assert holder.name in instance_names(federation) and holder.api.get("/health").status_code == 200


def test_a_killed_instance_leaves_within_its_ttl_and_can_come_back(federation: Federation) -> None:
    node = federation.c
    process = node.service.process
    takeover = "took over its member key from its previous lease"
    # Killed and restarted at once: its old lease still holds the key, and it takes it over. "At
    # once" whatever the machine's speed: the old lease is kept alive from outside until the new
    # process is ready (a restart slower than the TTL, on a loaded machine, found the key gone). The
    # longer TTL leaves room for the first outside keep-alive after the kill.
    process.env["MAO_MEMBER_TTL"] = "15"
    node.service.restart()
    try:
        takeovers = node.service.log_text().count(takeover)
        node.service.kill()
        with lease_kept_alive(federation, keys.member(node.name)):
            process.start()
            node.service.wait_ready()
        assert node.name in instance_names(federation)
        assert node.service.log_text().count(takeover) == takeovers + 1
    finally:
        process.env["MAO_MEMBER_TTL"] = str(MEMBER_TTL)
        node.service.restart()

    # Killed for good: its key goes when the lease runs out (the TTL is 3 s in these tests).
    node.service.kill()
    killed = time.monotonic()
    servers.wait_until(
        lambda: node.name not in instance_names(federation),
        timeout=4 * MEMBER_TTL + 5,
        interval=0.1,
        what=f"{node.name} to leave the member list",
    )
    gone_after = time.monotonic() - killed
    print(f"\n{node.name} left the member list {gone_after:.1f} s after SIGKILL (TTL {MEMBER_TTL} s)")
    # Bounded by the TTL (plus etcd's lease check interval), never the time to a next heartbeat.
    assert gone_after < 2 * MEMBER_TTL + 2
    node.service.process.start()
    node.service.wait_ready()
    servers.wait_until(lambda: node.name in instance_names(federation), timeout=30, what="fed-c back")
