"""A member with a valid certificate writing into etcd directly, as the real deployment runs it.

Two instances, ``sec-a`` and ``sec-b``, with certificates from one federation CA and an etcd that
takes only those (client certificate authentication). The attacker holds ``sec-b``'s certificate,
so etcd lets it read and write every key; it goes past every API with its own etcd client. Each
test: what it writes, and that ``sec-a`` does not act on it (docs/security.md, "Members").
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ctl import pki
from orchestrator.federation import keys
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.seals import Sealer
from orchestrator.federation.tls import EtcdTls
from tests import servers
from tests.api import Api, assert_error, unique

from ..conftest import orchestrator_env

APP = "/usr/src/app"


@dataclass
class SecureFederation:
    etcd: servers.EtcdServer
    pki: dict[str, Path]
    a: Api
    b: Api
    services: dict[str, servers.ServiceProcess]

    def tls(self, name: str) -> EtcdTls:
        folder = self.pki[name]
        return EtcdTls.from_files(folder / pki.CA_CERT, folder / pki.CLIENT_CERT, folder / pki.CLIENT_KEY)

    def as_member(self, name: str, work: Callable[[Etcd], Any]) -> Any:
        """Run ``work`` with ``name``'s own etcd client: what that member can do past every API."""

        async def go() -> Any:
            client = Etcd([(self.etcd.host, self.etcd.client_port)], timeout=5, tls=self.tls(name))
            try:
                return await work(client)
            finally:
                await client.close()

        return asyncio.run(go())

    def sealer(self, name: str) -> Sealer:
        return Sealer(name, self.tls(name))


@pytest.fixture(scope="module")
def secure(servers_tmp: Path, executor, busybox_image) -> Iterator[SecureFederation]:
    root = servers_tmp / "attacks"
    authority = pki.create_authority("attacks")
    folders = {name: servers.make_member_pki(root / name / "pki", authority, name) for name in ("sec-a", "sec-b")}
    etcd = servers.start_etcd(root, name="sec-etcd", tls=folders["sec-a"])
    services: dict[str, servers.ServiceProcess] = {}
    try:
        for name, folder in folders.items():
            env = orchestrator_env(
                name,
                root / name / "data",
                etcd.endpoint,
                executor,
                MAO_ETCD_CA=str(folder / pki.CA_CERT),
                MAO_ETCD_CERT=str(folder / pki.CLIENT_CERT),
                MAO_ETCD_KEY=str(folder / pki.CLIENT_KEY),
                MAO_ETCD_INSECURE="0",
                MAO_MEMBER_TTL="3",
                MAO_LOCK_WAIT="60",
                MAO_MASTER_ROOTS=str(root),
            )
            services[name] = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
        yield SecureFederation(
            etcd,
            folders,
            Api(services["sec-a"].url, services["sec-a"].token),
            Api(services["sec-b"].url, services["sec-b"].token),
            services,
        )
    finally:
        for service in services.values():
            service.stop()
        etcd.destroy()


def put(key: str, value: Any, lease_ttl: int | None = None) -> Callable[[Etcd], Any]:
    async def work(client: Etcd) -> None:
        lease = await client.grant_lease(lease_ttl) if lease_ttl else None
        await client.put(key, value, lease=lease)

    return work


def get(key: str) -> Callable[[Etcd], Any]:
    async def work(client: Etcd) -> Any:
        kv = await client.get(key)
        return kv.value if kv else None

    return work


def pipeline_of(api: Api, tool: str, output: str, script: str, **fields: Any) -> str:
    name = unique("p")
    step = {"name": "s", "tool": tool, "output_dataset": output, "cmd": ["sh", "-c", script], **fields}
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [step]}))
    return name


def test_registrations_are_sealed_by_their_owner(secure: SecureFederation) -> None:
    a = secure.a
    tool, data = unique("sealed"), unique("sealed-data")
    a.tool(tool)
    a.local_dataset(data)
    owner = a.ok(a.get(f"/registry/tools/{tool}/owner"))
    assert owner["owner"] == "sec-a" and owner["proof"] == "signature"
    sealed_v1 = secure.as_member("sec-b", get(keys.tool(tool)))
    assert sealed_v1["signed_by"] == "sec-a" and sealed_v1["signature"]
    # The owner changes its tool; its pipeline pins the new image.
    a.ok(a.post("/registry/tools", {"name": tool, "image": "busybox:1"}))
    a.ok(a.post("/registry/tools", {"name": tool, "image": "busybox:latest"}))
    pipeline = pipeline_of(a, tool, data, f"date > {APP}/data/x")
    assert a.run(pipeline)["status"] == "succeeded"
    # Through its own API, sec-b is refused.
    assert_error(secure.b.post("/registry/tools", {"name": tool, "image": "evil:1"}), 403, "not_owner")
    attacks = {
        "the owner's value, image changed": {**sealed_v1, "image": "evil:1"},
        "sealed by sec-b, claiming sec-a": {
            **secure.sealer("sec-b").seal({"name": tool, "image": "evil:1", "owner": "sec-a", "revision": 9}),
            "signed_by": "sec-a",
        },
        "unsealed, claiming sec-a": {"name": tool, "image": "evil:1", "owner": "sec-a", "revision": 9, "signed_by": "sec-a"},
    }
    for what, value in attacks.items():
        secure.as_member("sec-b", put(keys.tool(tool), value))
        alone = assert_error(a.get(f"/registry/tools/{tool}"), 502, "malformed_registry_entry")
        assert keys.tool(tool) in alone["message"], what
        assert tool not in a.ok(a.get("/registry/tools")), what
        refused = assert_error(a.post("/pipeline/run", {"name": pipeline}), 409, "registration_changed")
        assert "not valid" in refused["message"], what
    # Its own sealed value, or an older value the owner once sealed (a replay): valid seals, and
    # still not used, since they differ from what sec-a's operator accepted.
    own = secure.sealer("sec-b").seal({"name": tool, "image": "evil:1", "owner": "sec-b", "revision": 1})
    secure.as_member("sec-b", put(keys.tool(tool), own))
    refused = assert_error(a.post("/pipeline/run", {"name": pipeline}), 409, "registration_changed")
    assert "image busybox:latest -> evil:1" in refused["message"] and "owner sec-a -> sec-b" in refused["message"]
    secure.as_member("sec-b", put(keys.tool(tool), sealed_v1))  # revision 1: image busybox:latest
    assert a.ok(a.get(f"/registry/tools/{tool}/owner"))["revision"] == 1
    assert a.run(pipeline)["status"] == "succeeded"  # what was accepted is what runs
    secure.as_member("sec-b", put(keys.tool(tool), {**sealed_v1, "image": "busybox:1", "revision": 2}))
    assert_error(a.post("/pipeline/run", {"name": pipeline}), 409, "registration_changed")


def test_a_schedule_not_written_by_its_creator_never_fires(secure: SecureFederation) -> None:
    a, b = secure.a, secure.b
    tool, data = unique("st"), unique("sd")
    a.tool(tool)
    a.local_dataset(data)
    pipeline = pipeline_of(a, tool, data, f"date > {APP}/data/x")
    # The same pipeline on b: a's definition without a's version (a version is one instance's).
    copied = {k: v for k, v in a.ok(a.get(f"/pipeline/{pipeline}")).items() if k != "version"}
    b.ok(b.post("/pipeline/init", copied))

    def record(**fields: Any) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "pipeline": pipeline,
            "cron": "* * * * *",
            "timezone": "UTC",
            "placement": {"labels": {}},
            "created_by": "sec-a",
            "created_at": datetime.now(UTC).isoformat(),
            **fields,
        }

    forged = {
        "sealed by sec-b, naming sec-a": {**secure.sealer("sec-b").seal(record()), "signed_by": "sec-a"},
        "unsealed, naming sec-a": record(),
        "naming a non-member": record(created_by="mallory"),
        "priority out of range": secure.sealer("sec-b").seal(record(created_by="sec-b", priority=10**30)),
        "catch-up window out of range": secure.sealer("sec-b").seal(
            record(created_by="sec-b", catchup="all", catchup_window=10**12)
        ),
    }
    for value in forged.values():
        secure.as_member("sec-b", put(keys.schedule(value["id"]), value))
    # A real one, through sec-b's own API: once sec-a has armed it, it has seen every forged one.
    real = b.ok(b.post("/pipeline/run", {"name": pipeline, "cron": "0 0 1 1 *", "scope": "federation"}))
    servers.wait_until(lambda: real["job_id"] in a.ok(a.get("/jobs")), timeout=30, what="sec-a to arm it")
    armed = a.ok(a.get("/jobs"))
    listed = {s["id"] for s in a.ok(a.get("/federation/schedules"))}
    for what, value in forged.items():
        assert value["id"] not in armed and value["id"] not in listed, what
    assert real["job_id"] in listed
    log = secure.services["sec-a"].log_text()
    for what, value in forged.items():
        assert f"{keys.schedule(value['id'])} (version" in log, what  # said once, naming the key
    b.ok(b.delete(f"/jobs/{real['job_id']}"))


def test_lock_member_and_advance_records_are_checked(secure: SecureFederation) -> None:
    a = secure.a
    tool, up, down = unique("at"), unique("up"), unique("down")
    a.tool(tool)
    a.local_dataset(up)
    a.local_dataset(down)
    upstream = pipeline_of(a, tool, up, f'echo "$MAO_RUN_ID" > {APP}/data/x')
    downstream = pipeline_of(a, tool, down, f"cat {APP}/input/x > {APP}/data/y", input_dataset=up)
    a.ok(a.post("/pipeline/run", {"name": downstream, "trigger": {"dataset": up}}))
    # A lock on no lease (or on one longer than any lock's) would block every merge into `up`.
    secure.as_member("sec-b", put(keys.dataset_lock(up), {"instance": "sec-b", "purpose": "forever"}))
    # An advance nobody merged, of a dataset with a data trigger on sec-a.
    fake = {"commit": "ab" * 20, "instance": "sec-b", "merged_at": datetime.now(UTC).isoformat()}
    secure.as_member("sec-b", put(keys.ground_truth(up), fake))
    merged = a.run(upstream)
    assert merged["status"] == "succeeded", merged  # the lock that was none did not block it
    commit = merged["steps"][0]["merge_commit"]

    def downstream_runs() -> list[dict]:
        return a.ok(a.get("/runs", pipeline=downstream))

    servers.wait_until(lambda: downstream_runs(), timeout=60, what="the real advance to fire")
    runs = downstream_runs()
    assert [r["trigger_commit"] for r in runs] == [commit]  # the fake one fired nothing
    log = secure.services["sec-a"].log_text()
    assert f"removed {keys.dataset_lock(up)}, which was no lock (it is on no lease" in log
    assert f"ground-truth of {up} advanced to abababababab, it was announced, but no trigger fires" in log
    # A member record for an instance that is not there, on a lease, sealed by sec-b.
    ghost = secure.sealer("sec-b").seal({"name": "sec-ghost", "api_url": "http://127.0.0.1:9"})
    secure.as_member("sec-b", put(keys.member("sec-ghost"), {**ghost, "signed_by": "sec-ghost"}, lease_ttl=60))
    # sec-a's own record written over (on sec-a's lease): sec-a puts it back within a heartbeat.
    lease = secure.as_member("sec-b", _lease_of(keys.member("sec-a")))
    secure.as_member("sec-b", _put_on(keys.member("sec-a"), {"name": "sec-a", "api_url": "http://evil"}, lease))

    def members() -> set[str]:
        return {m["name"] for m in a.ok(a.get("/federation/members"))["instances"]}

    servers.wait_until(lambda: members() == {"sec-a", "sec-b"}, timeout=30, what="the member list to be true")
    assert "sec-ghost" not in members()


def test_audits_not_written_by_their_auditor_are_not_acted_on(secure: SecureFederation) -> None:
    a = secure.a
    audit_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    record = {
        "id": audit_id,
        "dataset": "whatever",
        "file": "x.txt",
        "auditor": "sec-a",  # sec-a would decide it, in its own name
        "wait": 5,
        "deadline": (now + timedelta(seconds=5)).isoformat(),
        "created_at": now.isoformat(),
    }
    sealed = {**secure.sealer("sec-b").seal(record), "signed_by": "sec-a"}
    secure.as_member("sec-b", put(keys.audit(audit_id), sealed, lease_ttl=30))
    assert_error(a.get(f"/audits/{audit_id}"), 404)
    result = secure.sealer("sec-b").seal({"id": audit_id, "auditor": "sec-a", "outcome": "agreed"})
    secure.as_member("sec-b", put(keys.audit_result(audit_id), result, lease_ttl=30))
    assert_error(a.get(f"/audits/{audit_id}"), 404)  # nor a result stored in its auditor's name


def _lease_of(key: str) -> Callable[[Etcd], Any]:
    async def work(client: Etcd) -> int:
        kv = await client.get(key)
        assert kv is not None
        return kv.lease

    return work


def _put_on(key: str, value: Any, lease: int) -> Callable[[Etcd], Any]:
    async def work(client: Etcd) -> None:
        await client.put(key, value, lease=lease)

    return work


def test_everything_stays_answerable(secure: SecureFederation) -> None:
    """After all of the above, every listing on sec-a still answers (nothing turned into a 500)."""
    a = secure.a
    for path in ("/registry/tools", "/registry/datasets", "/registry/pipelines", "/federation/members",
                 "/federation/schedules", "/locks", "/jobs", "/health", "/runs"):  # fmt: skip
        response = a.get(path)
        assert response.status_code == 200, (path, response.text)
    assert json.loads(a.get("/health").text)["etcd"] == "ok"
