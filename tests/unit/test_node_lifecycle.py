"""Node starts one ordered list of services and closes what started in reverse, also after a failed
start (the node is built from real settings; the services are stand-ins that record what they saw)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import DatabaseUnavailable
from orchestrator.executors.seam import Health
from orchestrator.node import Node
from orchestrator.services import Service


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    settings = load_settings(
        {
            "MAO_EXECUTOR_TOKEN": "x" * 16,
            "MAO_DATA_DIR": str(tmp_path),
            "MAO_ETCD_INSECURE": "1",
            "MAO_RAW_DATASET": "raw",  # the raw listener is one of the services
        }
    )
    built = Node.build(settings)  # nothing connects until start

    async def answers() -> None:
        return None

    async def healthy() -> dict[str, Health]:
        return {}

    monkeypatch.setattr(built.etcd, "check", answers)
    monkeypatch.setattr(built.backends, "health", healthy)
    return built


class Recorded:
    def __init__(self, name: str, said: list[str], fails: str = "") -> None:
        self.name, self.said, self.fails = name, said, fails

    async def start(self) -> None:
        if self.fails == "start":
            raise DatabaseUnavailable(f"{self.name} does not answer")
        self.said.append(f"start {self.name}")

    async def close(self) -> None:
        self.said.append(f"close {self.name}")
        if self.fails == "close":
            raise RuntimeError(f"{self.name} would not close")


def use(node: Node, parts: list[Recorded], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "services", lambda: [(p.name, p) for p in parts])


def test_every_part_is_a_service_in_a_start_order_that_makes_sense(node: Node) -> None:
    services = node.services()
    names = [name for name, _ in services]
    assert all(isinstance(service, Service) for _, service in services)
    assert len(set(names)) == len(names)
    assert names[:3] == ["etcd client", "membership", "database"]  # the name is claimed first
    order = names.index
    assert order("runner") < order("backend sweep") < order("run queue") < order("scheduler")
    # Closed in reverse: the schedulers before the runner, the runner before the raw listener (a step
    # that ended during the shutdown still votes), the listener before voting (its last batch is voted).
    assert order("voting") < order("raw listener") < order("runner")
    assert order("locks") < order("voting")  # closed after every lock holder: revokes the locks' lease
    assert order("voting") < order("runner") < order("scheduler") < order("federation scheduler")
    assert order("backends") < order("runner") and order("database") < order("runner")


async def test_close_goes_in_reverse_and_past_a_part_that_fails(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    use(node, [Recorded("a", said), Recorded("b", said, fails="close"), Recorded("c", said)], monkeypatch)
    await node.start()
    await node.close()
    assert said == ["start a", "start b", "start c", "close c", "close b", "close a"]
    await node.close()  # nothing is closed twice
    assert len(said) == 6


async def test_a_failed_start_closes_what_started_before_it(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    use(
        node,
        [Recorded("a", said), Recorded("b", said), Recorded("c", said, fails="start"), Recorded("d", said)],
        monkeypatch,
    )
    with pytest.raises(DatabaseUnavailable):
        await node.start()
    assert said == ["start a", "start b", "close b", "close a"]
    await node.close()
    assert len(said) == 4
