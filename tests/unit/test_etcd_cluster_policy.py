"""The quorum rules of adding and removing etcd members, against a stand-in for etcd."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.errors import BadRequest, Conflict, NotFound
from orchestrator.federation.cluster import EtcdCluster, check_peer_url, quorum


class FakeEtcd:
    def __init__(self, healthy: list[bool]) -> None:
        self.list = [
            {
                "id": 0xA0 + i,
                "name": f"e{i}",
                "peer_urls": [f"http://10.0.0.{i}:2380"],
                "client_urls": [f"http://10.0.0.{i}:2379"],
            }
            for i in range(len(healthy))
        ]
        self.health = {f"http://10.0.0.{i}:2379": ok for i, ok in enumerate(healthy)}
        self.added: list[str] = []
        self.removed: list[int] = []

    async def members(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self.list]

    async def member_answers(self, client_url: str, timeout: float = 1.0) -> bool:
        return self.health[client_url]

    async def add_member(self, peer_url: str) -> dict[str, Any]:
        self.added.append(peer_url)
        return {"id": 0xFF, "name": "", "peer_urls": [peer_url]}

    async def remove_member(self, member_id: int) -> None:
        self.removed.append(member_id)


def cluster(*healthy: bool) -> tuple[EtcdCluster, FakeEtcd]:
    etcd = FakeEtcd(list(healthy))
    return EtcdCluster(etcd), etcd  # type: ignore[arg-type]


def test_quorum_sizes() -> None:
    assert [quorum(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]


async def test_add_needs_a_majority_of_the_new_size_already_answering() -> None:
    policy, etcd = cluster(True, True, True)
    added = await policy.add("e3", "http://10.0.0.3:2380")
    assert added["member"] == {"id": "ff", "name": "e3", "peer_urls": ["http://10.0.0.3:2380"]}
    assert added["ETCD_INITIAL_CLUSTER"] == (
        "e0=http://10.0.0.0:2380,e1=http://10.0.0.1:2380,e2=http://10.0.0.2:2380,e3=http://10.0.0.3:2380"
    )
    assert added["ETCD_INITIAL_CLUSTER_STATE"] == "existing"

    policy, etcd = cluster(True, True, False)
    with pytest.raises(Conflict) as refused:
        await policy.add("e3", "http://10.0.0.3:2380")
    assert "4 members and need 3" in refused.value.message and "only 2 of the 3" in refused.value.message
    assert etcd.added == []
    assert added["writes_pause_until_started"] is False and "warning" not in added


async def test_a_lone_member_may_add_a_second_one_and_is_told_writes_pause() -> None:
    # etcd's own exception: 1 < quorum(2), yet a lone member that answers may add a second one.
    policy, etcd = cluster(True)
    added = await policy.add("e1", "http://10.0.0.1:2380")
    assert etcd.added == ["http://10.0.0.1:2380"]
    assert added["writes_pause_until_started"] is True
    assert "pauses until e1's etcd member starts" in added["warning"]
    assert added["ETCD_INITIAL_CLUSTER"] == "e0=http://10.0.0.0:2380,e1=http://10.0.0.1:2380"
    # Not when that lone member does not answer, and not from two members with one down.
    for healthy in ((False,), (True, False)):
        policy, etcd = cluster(*healthy)
        with pytest.raises(Conflict):
            await policy.add("new", "http://10.0.0.9:2380")
        assert etcd.added == []


async def test_remove_keeps_a_majority_and_never_the_last_member() -> None:
    policy, etcd = cluster(True, True, False)
    with pytest.raises(Conflict) as refused:
        await policy.remove("e0")
    assert "remaining 2 members need 2" in refused.value.message
    removed = await policy.remove("e2")  # the dead one: the two that answer stay a majority
    assert removed["member"]["name"] == "e2" and etcd.removed == [0xA2]
    policy, etcd = cluster(True)
    with pytest.raises(Conflict) as refused:
        await policy.remove("e0")
    assert refused.value.code == "last_member"
    with pytest.raises(NotFound):
        await cluster(True, True)[0].remove("nobody")


async def test_add_refuses_names_and_urls_in_use() -> None:
    policy, _ = cluster(True, True, True)
    with pytest.raises(Conflict):
        await policy.add("e1", "http://10.0.0.9:2380")
    with pytest.raises(Conflict):
        await policy.add("new", "http://10.0.0.1:2380")
    with pytest.raises(BadRequest):
        await policy.add("-x", "http://10.0.0.9:2380")


@pytest.mark.parametrize(
    "url", ["http://h:2380", "https://etcd-1.example.org:2380/", "http://[::1]:2380", "http://10.0.0.1:1"]
)
def test_good_peer_urls(url: str) -> None:
    assert check_peer_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "h:2380",
        "ftp://h:2380",
        "http://h",
        "http://h:99999",
        "http://h:2380/x",
        "http://u@h:2380",
        "http://h:2380?x=1",
        "http://-h:2380",
        "http://h h:2380",
    ],
)
def test_bad_peer_urls(url: object) -> None:
    with pytest.raises(BadRequest):
        check_peer_url(url)
