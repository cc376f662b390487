"""Members cannot hijack each other's registrations (docs/security.md, "Members").

From the position of another member of the three-instance federation: through its own API (403
``not_owner``), and writing into etcd directly with its own client, past every API (here etcd is
plain HTTP, so the owners are claims; test_member_attacks.py repeats the direct writes over TLS,
where a seal proves the owner). Whatever the second member does, the first one's pipelines keep
running exactly what their operator accepted, or stop with ``registration_changed`` naming the
change: the swapped image never receives the private variable, the swapped master is never pushed
to, until the operator accepts.
"""

from __future__ import annotations

import asyncio
import time

import docker

from orchestrator.federation import keys
from orchestrator.federation.etcd import Etcd
from tests import gitutil, servers
from tests.api import Api, assert_error, unique

from .conftest import Federation

APP = "/usr/src/app"


def etcd_write(federation: Federation, key: str, change) -> None:  # noqa: ANN001 - a callable on a dict
    """What another member can do with its own etcd client: read a key and write anything back."""

    async def go() -> None:
        member = federation.etcd[1]
        client = Etcd([(member.host, member.client_port)], timeout=5)
        try:
            current = await client.get(key)
            await client.put(key, change(dict(current.value) if current and current.value else {}))
        finally:
            await client.close()

    asyncio.run(go())


def secret_pipeline(api: Api, tool: str, data: str) -> str:
    pipeline = unique("secret")
    step = {
        "name": "s",
        "tool": tool,
        "output_dataset": data,
        "env": {"TOKEN": "{{ MAO_PRIVATE_VARIABLE }}"},
        "private_env": {"TOKEN": "s3cr3t-of-fed-a"},
        "cmd": ["sh", "-c", f'echo "$MAO_RUN_ID" > {APP}/data/out.txt'],
    }
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    return pipeline


def ended_run(api: Api, run_id: str) -> dict:
    def ended() -> dict | None:
        run = api.ok(api.get(f"/runs/{run_id}"))
        return run if run["status"] in ("failed", "succeeded", "cancelled") else None

    return servers.wait_until(ended, timeout=60, what=f"run {run_id} to end")


def test_only_the_owner_changes_deletes_or_hands_over(federation: Federation) -> None:
    a, b, c = federation.a.api, federation.b.api, federation.c.api
    tool = unique("owned")
    a.tool(tool)
    assert a.ok(a.get(f"/registry/tools/{tool}/owner"))["owner"] == "fed-a"
    # Another member, through its own API: refused, and nothing changed.
    refused = assert_error(b.post("/registry/tools", {"name": tool, "image": "evil:1"}), 403, "not_owner")
    assert refused["owner"] == "fed-a"
    assert_error(b.delete(f"/registry/tools/{tool}"), 403, "not_owner")
    assert_error(b.post(f"/registry/tools/{tool}/owner", {"owner": "fed-b"}), 403, "not_owner")
    assert a.ok(a.get(f"/registry/tools/{tool}"))["image"] == "busybox:latest"
    # The owner hands it over; from then on the new owner, and only it, changes it.
    handed = a.ok(a.post(f"/registry/tools/{tool}/owner", {"owner": "fed-b"}))
    assert handed["owner"] == "fed-b" and handed["signed_by"] == "fed-a" and handed["revision"] == 2
    assert_error(a.post("/registry/tools", {"name": tool, "image": "busybox:1"}), 403, "not_owner")
    b.ok(b.post("/registry/tools", {"name": tool, "image": "busybox:2"}))
    assert c.ok(c.get(f"/registry/tools/{tool}/owner"))["revision"] == 3
    b.ok(b.delete(f"/registry/tools/{tool}"))
    # Datasets and pipelines follow the same rule.
    data = unique("owned-data")
    a.local_dataset(data)
    elsewhere = c.ok(c.post("/bare-repo/init", {"name": unique("elsewhere")}))["path"]
    assert_error(c.post("/registry/datasets", {"name": data, "master": elsewhere}), 403, "not_owner")
    assert_error(c.delete(f"/registry/datasets/{data}"), 403, "not_owner")


def test_a_registration_from_before_owners_is_claimed_once(federation: Federation) -> None:
    a, b = federation.a.api, federation.b.api
    tool = unique("legacy")
    etcd_write(federation, keys.tool(tool), lambda _: {"name": tool, "image": "busybox:latest"})
    assert a.ok(a.get(f"/registry/tools/{tool}/owner"))["proof"] == "none"
    assert_error(a.delete(f"/registry/tools/{tool}"), 403, "not_owner")  # claim it first
    assert_error(a.post(f"/registry/tools/{tool}/owner", {"owner": "fed-c"}), 403, "not_owner")
    assert b.ok(b.post(f"/registry/tools/{tool}/owner", {"owner": "fed-b"}))["owner"] == "fed-b"
    assert_error(a.post(f"/registry/tools/{tool}/owner", {"owner": "fed-a"}), 403, "not_owner")
    b.ok(b.delete(f"/registry/tools/{tool}"))


def test_a_swapped_image_never_receives_the_private_variables(
    federation: Federation, docker_engine: docker.DockerClient, busybox_image: str
) -> None:
    """The issue's attack: another member swaps the image of fed-a's tool; fed-a's next run would
    hand that image its private variables. It does not: the run stops before any container."""
    a, b = federation.a.api, federation.b.api
    evil = f"mao-test/evil-{unique('i')}:1"
    docker_engine.images.get(busybox_image).tag(evil)
    tool, data = unique("victim-tool"), unique("victim-data")
    a.tool(tool)
    a.local_dataset(data)
    pipeline = secret_pipeline(a, tool, data)
    assert a.run(pipeline)["status"] == "succeeded"
    # Through its own API the second member cannot; so it writes into etcd past every API.
    assert_error(b.post("/registry/tools", {"name": tool, "image": evil}), 403, "not_owner")
    for forged in (
        lambda v: {**v, "image": evil},  # the owner's other fields kept
        lambda v: {"name": tool, "image": evil, "owner": "fed-b", "revision": 9, "signed_by": "fed-b"},
        lambda v: {"name": tool, "image": evil},  # made to look like a registration from before owners
    ):
        since = int(time.time()) - 1
        etcd_write(federation, keys.tool(tool), forged)
        refused = assert_error(a.post("/pipeline/run", {"name": pipeline}), 409, "registration_changed")
        assert f"image busybox:latest -> {evil}" in refused["message"]
        assert {"kind": "tool", "name": tool, "what": "image", "pinned": "busybox:latest", "current": evil} in (
            refused["changes"]
        )
        # A run the API does not start (a schedule's, a backfill's) fails at once, every step
        # skipped, no attempt made.
        span = {"name": pipeline, "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "cron": "0 0 * * *"}
        response = a.post("/pipeline/backfill", span)
        assert response.status_code == 202, response.text
        run_id = response.json()["runs"][0]
        ended = ended_run(a, run_id)
        assert ended["status"] == "failed" and "registration_changed" in ended["error"]
        assert [s["status"] for s in ended["steps"]] == ["skipped"] and not ended["steps"][0].get("attempts")
        created = docker_engine.events(
            since=since, until=int(time.time()) + 1, filters={"event": "create", "image": evil}, decode=True
        )
        assert list(created) == []  # no container of the swapped image, so no secret handed to one
    # The operator sees the difference, accepts it, and only then does it run.
    preview = a.ok(a.post(f"/pipeline/{pipeline}/accept", {"dry_run": True}))
    assert any(c["what"] == "image" and c["current"] == evil for c in preview["changes"])
    accepted = a.ok(a.post(f"/pipeline/{pipeline}/accept"))
    assert accepted["accepted"] == accepted["changes"] and accepted["changes"]
    assert a.ok(a.get(f"/pipeline/{pipeline}/pins"))["changes"] == []
    assert a.run(pipeline)["status"] == "succeeded"


def test_a_swapped_master_is_never_pushed_to(federation: Federation) -> None:
    a = federation.a.api
    tool, data = unique("mtool"), unique("mdata")
    a.tool(tool)
    master = a.local_dataset(data)
    pipeline = secret_pipeline(a, tool, data)
    assert a.run(pipeline)["status"] == "succeeded"
    other = a.ok(a.post("/bare-repo/init", {"name": unique("attacker-master")}))["path"]
    etcd_write(federation, keys.dataset(data), lambda v: {**v, "master": other})
    refused = assert_error(a.post("/pipeline/run", {"name": pipeline}), 409, "registration_changed")
    assert f"dataset {data}: master" in refused["message"] and other in refused["message"]
    assert gitutil.branches(other) == []  # nothing was pushed to the master nobody accepted
    # Say the dataset really moved (its history copied over): its change is accepted for every
    # pipeline of fed-a that pinned it, and the next run pushes there.
    gitutil.git(master, "push", other, "refs/heads/*:refs/heads/*")
    preview = a.ok(a.post(f"/registry/datasets/{data}/accept", {"dry_run": True}))
    assert list(preview["scopes"]) == [pipeline]
    a.ok(a.post(f"/registry/datasets/{data}/accept"))
    assert a.run(pipeline)["status"] == "succeeded"
    assert "ground-truth" in gitutil.branches(other)
