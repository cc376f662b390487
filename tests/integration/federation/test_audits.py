"""Peer validation on the three-instance federation: each instance's copy of a file, scored by the
auditor at the deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from orchestrator.federation import keys
from orchestrator.federation.etcd import Etcd
from tests import gitutil, servers
from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl

from .conftest import Federation

APP = "/usr/src/app"
WAIT = 5  # the shortest audit: every test waits for its deadline


def collect(federation: Federation, scripts: dict[str, str], path: str = "snapshot.txt") -> tuple[str, str]:
    """The same one-step pipeline on the instances named in ``scripts``, each writing ``path`` with its
    own shell snippet; each runs once. Returns (dataset, its master)."""
    a = federation.a.api
    tool, data, pipeline = unique("crawler"), unique("snapshots"), unique("crawl")
    a.tool(tool)
    master = a.local_dataset(data)
    cases = " ".join(f"{name}) {script} > {APP}/data/{path};;" for name, script in scripts.items())
    command = f'mkdir -p "$(dirname {APP}/data/{path})"; case "$MAO_INSTANCE" in {cases} esac'
    step = {"name": "crawl", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", command]}
    apis = [federation.nodes[name].api for name in scripts]
    for api in apis:
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    with ThreadPoolExecutor(len(apis)) as pool:
        runs = list(pool.map(lambda api: api.run(pipeline), apis))
    for name, run in zip(scripts, runs, strict=True):
        # Differing copies of one file conflict in ground-truth; the node branch is pushed all the same.
        assert run["steps"][0]["output_commit"], run
        assert f"crawl-{name}" in gitutil.branches(master)
    return data, master


def audit(
    api: Api, dataset: str, path: str = "snapshot.txt", while_pending: Callable[[str], None] | None = None
) -> dict:
    started = api.post("/audits", {"dataset": dataset, "file": path, "wait": WAIT})
    assert started.status_code == 202, started.text
    record = started.json()
    assert record["status"] == "pending" and record["auditor"] and record["deadline"]
    pending = api.ok(api.get(f"/audits/{record['id']}"))
    assert pending["status"] == "pending" and pending["file"] == path
    if while_pending is not None:
        while_pending(record["id"])
    return servers.wait_until(
        lambda: (found := api.ok(api.get(f"/audits/{record['id']}")))["status"] == "decided" and found,
        timeout=WAIT + 60,
        interval=0.25,
        what=f"audit {record['id']} to be decided",
    )


def who(entries: list[dict]) -> list[str]:
    return [e["instance"] for e in entries]


def etcd_keys(federation: Federation, *prefixes: str) -> list[str]:
    async def read() -> list[str]:
        etcd = Etcd([(m.host, m.client_port) for m in federation.etcd], timeout=2)
        try:
            return [kv.key for prefix in prefixes for kv in await etcd.list_prefix(prefix)]
        finally:
            await etcd.close()

    return asyncio.run(read())


def leftovers(federation: Federation, audit_id: str) -> list[str]:
    return etcd_keys(federation, keys.audit(audit_id), keys.audit_answers(audit_id))


def test_one_corrupted_snapshot_loses_to_two_good_ones(federation: Federation) -> None:
    good = "printf '1\\n2\\n3\\n4\\n'"
    data, _ = collect(
        federation, {"fed-a": good, "fed-b": good, "fed-c": "printf '1\\n2\\n3\\ngarbage\\nmore garbage\\n'"}
    )

    def answers_apart_from_the_records(audit_id: str) -> None:
        # Every instance watches /mao/v1/audits/ for records: the answers must not be under it.
        api = federation.b.api
        servers.wait_until(
            lambda: api.ok(api.get(f"/audits/{audit_id}")).get("answers") == 3,
            timeout=WAIT,
            interval=0.1,
            what="three answers",
        )
        watched = [key for key in etcd_keys(federation, keys.AUDITS) if audit_id in key]
        assert watched == [keys.audit(audit_id)]
        expected = [keys.audit_answer(audit_id, n, f"crawl-{n}") for n in ("fed-a", "fed-b", "fed-c")]
        assert sorted(etcd_keys(federation, keys.audit_answers(audit_id))) == expected

    # Any instance may audit.
    result = audit(federation.b.api, data, while_pending=answers_apart_from_the_records)
    assert result["outcome"] == "joint_winners", result
    assert who(result["winners"]) == ["fed-a", "fed-b"]
    scores = {c["instance"]: (c["entries"], c["strangeness"]) for c in result["candidates"]}
    assert scores == {"fed-a": (4, 0), "fed-b": (4, 0), "fed-c": (5, 2)}
    assert who(result["candidates"])[-1] == "fed-c" and result["absent"] == []
    assert result["auditor"] == "fed-b" and result["decided_at"] >= result["deadline"]
    # The result stays; the audit's record and answers are gone with its lease.
    assert leftovers(federation, result["id"]) == []
    assert federation.c.api.ok(federation.c.api.get(f"/audits/{result['id']}")) == result


def test_identical_snapshots_are_joint_winners_even_when_fetched_from_git(federation: Federation) -> None:
    # About 109 KB: too large to travel through etcd, so the auditor fetches each copy from the master.
    data, master = collect(federation, {name: "seq 1 20000" for name in federation.nodes}, "big/list.txt")
    result = audit(federation.a.api, data, "big/list.txt")
    assert result["outcome"] == "joint_winners", result
    assert who(result["winners"]) == ["fed-a", "fed-b", "fed-c"]
    assert all(c["entries"] == 20000 and c["strangeness"] == 0 for c in result["candidates"])
    assert len({c["sha256"] for c in result["candidates"]}) == 1
    assert all(c["size"] > 64 * 1024 for c in result["candidates"])
    tip = gitutil.tip(master, "crawl-fed-c")
    assert next(c for c in result["candidates"] if c["instance"] == "fed-c")["commit"] == tip


def test_differing_snapshots_drawn_are_reported_as_a_draw(federation: Federation) -> None:
    # JSON arrays: their elements are the entries. fed-c does not run this collector: it answers nothing.
    data, _ = collect(
        federation,
        {
            "fed-a": """echo '[{"id": 1}, {"id": 2}, {"id": 3}]'""",
            "fed-b": """echo '[{"id": 2}, {"id": 1}, {"id": 4}]'""",
        },
        "items.json",
    )
    url = federation.c.service.url
    ran = maoctl(
        url, "--json", "dataset", "audit", "--name", data, "--file", "items.json", "--wait", str(WAIT)
    )
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["outcome"] == "draw" and result["winners"] == []
    assert who(result["drawn"]) == ["fed-a", "fed-b"]
    assert [c["strangeness"] for c in result["candidates"]] == [1, 1]
    assert "fed-c" not in who(result["candidates"]) + who(result["absent"])
    shown = maoctl(url, "dataset", "audit-result", "--id", result["id"])
    assert shown.exit_code == 0 and "a draw" in shown.stdout and "fed-a" in shown.stdout
    assert_error(federation.a.api.get(f"/audits/{'0' * 32}"), 404)


def test_an_instance_killed_during_the_audit_does_not_block_it(federation: Federation) -> None:
    same = "printf 'a\\nb\\n'"
    data, _ = collect(federation, {name: same for name in federation.nodes})
    dead = federation.c
    # Killed just before the audit starts: its member key outlives it for the TTL, so to the
    # federation it is a live instance that never answers, as if it had died after the start.
    dead.service.kill()
    try:
        started = time.monotonic()
        result = audit(federation.a.api, data)
        print(
            f"\naudit with {dead.name} dead decided {time.monotonic() - started:.1f} s after its start (wait {WAIT} s)"
        )
        assert result["outcome"] == "joint_winners", result
        assert who(result["winners"]) == ["fed-a", "fed-b"]
        assert "fed-c" not in who(result["candidates"]) + who(result["absent"])
    finally:
        dead.service.process.start()
        dead.service.wait_ready()
    assert dead.api.ok(dead.api.get(f"/audits/{result['id']}"))["outcome"] == "joint_winners"


def test_audits_refuse_bad_requests(federation: Federation) -> None:
    a = federation.a.api
    data = unique("audited")
    a.local_dataset(data)
    for path in ("../etc/passwd", "/etc/passwd", "-n", "a/../../b", "a//b", ".git/config", ""):
        assert_error(a.post("/audits", {"dataset": data, "file": path}), 400)
    for wait in (4, 3601, "soon"):
        assert_error(a.post("/audits", {"dataset": data, "file": "f", "wait": wait}), 400)
    assert_error(a.post("/audits", {"dataset": unique("ghost"), "file": "f"}), 404)
    assert_error(a.post("/audits", {"dataset": "../x", "file": "f"}), 400)
    assert_error(a.get("/audits/not-an-id"), 400, "invalid_id")
    # Nobody has a branch of this dataset: decided with no candidates.
    result = audit(a, data, "f")
    assert result["outcome"] == "no_candidates" and result["candidates"] == []
