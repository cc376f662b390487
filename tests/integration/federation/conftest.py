"""A federation of three instances on this machine, started once per test session.

Three etcd members on loopback ports form one cluster; three orchestrators (``fed-a``, ``fed-b``,
``fed-c``) each list all three endpoints with their own member first, share the session's executor
(and so the Docker engine), and keep their datasets' masters as bare repositories in their data
dirs. ``MAO_MEMBER_TTL=3`` (instead of 10 s) and ``MAO_LOCK_TTL=5`` keep the waits for a dead
instance short. Tests that kill something restart it before they end, so the next test finds a
healthy federation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import servers
from tests.api import Api

from ..conftest import Node, orchestrator_env

MEMBER_TTL = 3
LABELS = {"fed-a": "role=central,site=a", "fed-b": "role=central,site=b", "fed-c": "role=edge,site=c"}


@dataclass
class Federation:
    etcd: list[servers.EtcdServer]
    nodes: dict[str, Node]

    @property
    def a(self) -> Node:
        return self.nodes["fed-a"]

    @property
    def b(self) -> Node:
        return self.nodes["fed-b"]

    @property
    def c(self) -> Node:
        return self.nodes["fed-c"]

    def apis(self) -> list[Api]:
        return [node.api for node in self.nodes.values()]

    def healthy(self) -> bool:
        return all(m.is_healthy() for m in self.etcd) and all(
            node.api.get("/health").status_code == 200 for node in self.nodes.values()
        )


@pytest.fixture(scope="session")
def federation(servers_tmp: Path, executor, busybox_image) -> Iterator[Federation]:
    members = servers.start_etcd_cluster(servers_tmp / "fed-etcd", n=3, name_prefix="fed-etcd")
    endpoints = [m.endpoint for m in members]
    nodes: dict[str, Node] = {}
    try:
        for i, name in enumerate(LABELS):
            own_first = endpoints[i:] + endpoints[:i]
            data_dir = servers_tmp / name
            env = orchestrator_env(
                name,
                data_dir,
                ",".join(own_first),
                executor,
                MAO_MEMBER_TTL=str(MEMBER_TTL),
                MAO_LABELS=LABELS[name],
            )
            service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
            nodes[name] = Node(service, data_dir)
        yield Federation(members, nodes)
    finally:
        for node in nodes.values():
            node.service.stop()
        for member in members:
            member.destroy()
