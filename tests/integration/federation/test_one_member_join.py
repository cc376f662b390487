"""Growing a one-member federation: etcd lets its lone member add a second one, the operator is told
that writes pause until the newcomer's member starts, and they resume once it has."""

from __future__ import annotations

import re
from pathlib import Path

from tests import servers
from tests.api import Api, unique
from tests.ctl_helpers import maoctl

from ..conftest import orchestrator_env


def test_a_lone_member_adds_a_second_and_writes_resume_once_it_starts(
    servers_tmp: Path, executor, busybox_image
) -> None:
    root = servers_tmp / "lone"
    lone = servers.start_etcd(root, name="lone")
    newcomer: servers.EtcdServer | None = None
    env = orchestrator_env("node-lone", root / "node-lone", lone.endpoint, executor)
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-lone")
    try:
        api = Api(service.url)
        api.tool(unique("before"))
        peer_port = servers.free_port()
        peer_url = f"http://127.0.0.1:{peer_port}"

        def add() -> str | None:
            # etcd refuses new members for a few seconds after its member started.
            done = maoctl(
                service.url, "federation", "add-member", "--name", "newcomer", "--peer-url", peer_url
            )
            if done.exit_code != 0 and "unhealthy" in done.output:
                return None
            assert done.exit_code == 0, done.output
            return done.output

        said = servers.wait_until(add, timeout=30, interval=0.5, what="etcd to accept the second member")
        assert "Writes to the federation now pause until newcomer's etcd member starts" in said
        initial = re.search(r"ETCD_INITIAL_CLUSTER=(\S+)", said)
        assert initial is not None and f"newcomer={peer_url}" in initial.group(1)

        # Two members, one running: no quorum, so a write is a clear 503, not a hang or a 500.
        paused = api.post("/registry/tools", {"name": unique("paused"), "image": "busybox:latest"})
        assert paused.status_code == 503, paused.text

        newcomer = servers.EtcdServer(
            root,
            name="newcomer",
            peer_port=peer_port,
            initial_cluster=initial.group(1),
            cluster_state="existing",
        ).start(timeout=60)

        def written() -> bool:
            return api.post("/registry/tools", {"name": unique("after"), "image": "busybox:latest"}).ok

        servers.wait_until(written, timeout=60, interval=0.5, what="writes to resume")
        members = api.ok(api.get("/federation/members"))["etcd"]
        assert sorted(m["name"] for m in members) == ["lone", "newcomer"]
        assert all(m["healthy"] for m in members)
    finally:
        service.stop()
        if newcomer is not None:
            newcomer.stop()
        lone.stop()
