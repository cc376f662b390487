"""etcd's quota: a NOSPACE alarm shows in GET /health (503 for etcd) and /metrics and writes say why
they fail; half the quota in use compacts the history at once and pauses the gateway until there is
room again (orchestrator/federation/space.py, docs/operations.md "etcd's quota").

Each test has its own etcd member and orchestrator: the alarm stops every write of that etcd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aetcd
import aetcd.rpc
import pytest

from tests import servers
from tests.api import Api, assert_error, unique

from .conftest import orchestrator_env


@pytest.fixture
def lone(
    servers_tmp: Path, executor, request: pytest.FixtureRequest
) -> Iterator[tuple[servers.EtcdServer, Api]]:
    name = unique("space")
    etcd = servers.start_etcd(servers_tmp / name, name=name)
    extra = getattr(request, "param", {})
    env = orchestrator_env(name, servers_tmp / name / "data", etcd.endpoint, executor, **extra)
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
    try:
        yield etcd, Api(service.url, service.token)
    finally:
        service.stop()
        etcd.destroy()


async def alarm(etcd: servers.EtcdServer, action: int) -> None:
    """Raise a NOSPACE alarm as etcd does at its quota, or disarm every alarm (``etcdctl alarm
    disarm``: each with the member it was raised for)."""
    async with aetcd.Client(etcd.host, etcd.client_port, timeout=10) as client:
        await client.connect()
        stub = client.maintenancestub
        if action == aetcd.rpc.AlarmRequest.ACTIVATE:
            status = await stub.Status(aetcd.rpc.StatusRequest())
            member = status.header.member_id
            await stub.Alarm(aetcd.rpc.AlarmRequest(action=action, memberID=member, alarm=aetcd.rpc.NOSPACE))
            return
        raised = await stub.Alarm(aetcd.rpc.AlarmRequest(action=aetcd.rpc.AlarmRequest.GET))
        for one in raised.alarms:
            await stub.Alarm(aetcd.rpc.AlarmRequest(action=action, memberID=one.memberID, alarm=one.alarm))


def test_a_nospace_alarm_shows_in_health_and_metrics(lone: tuple[servers.EtcdServer, Api]) -> None:
    etcd, api = lone
    assert api.get("/health").status_code == 200
    asyncio.run(alarm(etcd, aetcd.rpc.AlarmRequest.ACTIVATE))
    try:
        health = api.get("/health")
        assert health.status_code == 503, health.text
        assert "NOSPACE" in health.json()["etcd"] and "operations.md" in health.json()["etcd"]
        metrics = api.get("/metrics").text
        assert 'mao_etcd_alarm{alarm="NOSPACE"} 1.0' in metrics
        assert "mao_etcd_quota_bytes 2.147483648e+09" in metrics and "mao_etcd_db_bytes" in metrics
        # A write says why it fails (not "unreachable").
        refused = assert_error(api.post("/registry/tools", {"name": unique("t"), "image": "busybox"}), 503)
        assert refused["error"] == "etcd_no_space" and "quota" in refused["message"]
    finally:
        asyncio.run(alarm(etcd, aetcd.rpc.AlarmRequest.DEACTIVATE))
    servers.wait_until(lambda: api.get("/health").status_code == 200, timeout=30, what="healthy again")
    assert 'mao_etcd_alarm{alarm="NOSPACE"} 0.0' in api.get("/metrics").text


@pytest.mark.parametrize("lone", [{"MAO_ETCD_QUOTA_BYTES": "16m"}], indirect=True)
def test_half_the_quota_in_use_pauses_the_gateway_until_there_is_room(
    lone: tuple[servers.EtcdServer, Api],
) -> None:
    etcd, api = lone
    api.ok(api.post("/write", {"key": "raw/before", "value": 1}))

    async def fill(put: bool) -> None:
        async with aetcd.Client(etcd.host, etcd.client_port, timeout=30) as client:
            for i in range(9):
                if put:
                    await client.put(f"/filler/{i}".encode(), b"x" * 1024 * 1024)
                else:
                    await client.delete(f"/filler/{i}".encode())

    asyncio.run(fill(True))  # 9 MiB in use, more than half of 16 MiB

    def paused() -> dict | None:
        answer = api.post("/write", {"key": "raw/during", "value": 1})
        return answer.json() if answer.status_code == 503 else None

    refused = servers.wait_until(paused, timeout=60, what="the gateway to pause")
    assert refused["error"] == "etcd_near_quota"
    asyncio.run(fill(False))  # the history is compacted at once: the room comes back
    servers.wait_until(
        lambda: api.post("/write", {"key": "raw/after", "value": 1}).status_code == 200,
        timeout=60,
        what="the gateway to take entries again",
    )
