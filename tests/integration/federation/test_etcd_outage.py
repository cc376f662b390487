"""etcd members die: with one down everything works (writes too); with two down (no quorum) the
federation answers clear 503s while local runs still commit, and their merges follow the recovery."""

from __future__ import annotations

import time

from orchestrator.federation.failover import ELECTION_GRACE
from tests import gitutil, servers
from tests.api import assert_error, unique

from .conftest import Federation

APP = "/usr/src/app"


def etcd_health(federation: Federation) -> dict[str, bool]:
    body = federation.b.api.ok(federation.b.api.get("/federation/members"))
    return {m["name"]: m["healthy"] for m in body["etcd"]}


def init_everywhere(federation: Federation) -> tuple[str, str]:
    tool, data, pipeline = unique("tool"), unique("outage"), unique("outage")
    federation.a.api.tool(tool)
    repo = federation.a.api.local_dataset(data)
    script = f'echo "$MAO_RUN_ID" > {APP}/data/$MAO_INSTANCE.txt'
    step = {"name": "s", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", script]}
    for api in federation.apis():
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    return pipeline, repo


def restart(members: list[servers.EtcdServer], federation: Federation) -> None:
    for member in members:
        member.restart(wait=False)
    for member in members:
        member.wait_healthy(60)
    servers.wait_until(federation.healthy, timeout=60, what="the federation to be healthy again")


def test_one_etcd_member_down_changes_nothing(federation: Federation) -> None:
    pipeline, repo = init_everywhere(federation)
    dead = federation.etcd[0]  # fed-a's first endpoint, and the leader: the other two must elect one
    dead.take_leadership(federation.etcd)
    dead.kill()
    try:
        a, b = federation.a.api, federation.b.api
        # The other two elect a leader (about two seconds here; longer on a loaded machine). A write
        # meanwhile, through fed-b (whose first endpoint is a follower), waits for the election: the
        # follower holds it, or answers "no leader" and the request is tried again for up to
        # failover.ELECTION_GRACE. It succeeds, or, when the election outlasts that, is a 503 no
        # sooner than the grace.
        started = time.monotonic()
        tool = {"name": unique("written-at-once"), "author": "tests", "image": "busybox:latest"}
        first = b.post("/registry/tools", {**tool, "data_repo": "", "code_repo": "", "artefact": ""})
        waited = time.monotonic() - started
        assert first.status_code < 300 or (first.status_code == 503 and waited >= ELECTION_GRACE), (
            first.status_code,
            round(waited, 2),
            first.text,
        )
        expected = {dead.name: False, **{m.name: True for m in federation.etcd[1:]}}

        def elected() -> bool:
            answer = b.get("/federation/members")
            return (
                answer.status_code == 200
                and {m["name"]: m["healthy"] for m in answer.json()["etcd"]} == expected
            )

        servers.wait_until(elected, timeout=60, what="a leader among the two live etcd members")
        tool = unique("written-during-outage")
        a.tool(tool)
        assert b.ok(b.get(f"/registry/tools/{tool}"))["name"] == tool
        run = a.run(pipeline)
        assert run["status"] == "succeeded" and run["steps"][0]["merge"] == "merged", run
        assert gitutil.tip(repo, "ground-truth") == run["steps"][0]["merge_commit"]
        assert etcd_health(federation) == {dead.name: False, **{m.name: True for m in federation.etcd[1:]}}

        # Membership changes that would lose the quorum are refused, with the numbers.
        error = assert_error(
            a.post("/federation/etcd-members", {"name": "newcomer", "peer_url": "http://127.0.0.1:1"}),
            409,
            "quorum_at_risk",
        )
        assert "would have 4 members and need 3" in error["message"] and "only 2 of the 3" in error["message"]
        error = assert_error(
            a.delete(f"/federation/etcd-members/{federation.etcd[1].name}"), 409, "quorum_at_risk"
        )
        assert (
            "remaining 2 members need 2" in error["message"] and "only 1 of them answer" in error["message"]
        )
    finally:
        restart([dead], federation)
    assert all(etcd_health(federation).values())


def test_adding_and_removing_an_etcd_member(federation: Federation) -> None:
    api = federation.c.api
    for body in (
        {"name": "../x", "peer_url": "http://127.0.0.1:2380"},
        {"name": "ok", "peer_url": "ftp://127.0.0.1:2380"},
        {"name": "ok", "peer_url": "http://127.0.0.1"},
        {"name": "ok", "peer_url": "http://127.0.0.1:2380/path"},
        {"name": "ok"},
    ):
        assert_error(api.post("/federation/etcd-members", body), 400)
    existing = federation.etcd[0]
    assert_error(
        api.post("/federation/etcd-members", {"name": existing.name, "peer_url": "http://127.0.0.1:9"}), 409
    )
    assert_error(api.post("/federation/etcd-members", {"name": "twin", "peer_url": existing.peer_url}), 409)
    assert_error(api.delete("/federation/etcd-members/nobody"), 404)

    peer_url = f"http://127.0.0.1:{servers.free_port()}"

    def add() -> dict | None:
        # etcd itself refuses new members while one of its members started less than 5 s ago.
        response = api.post("/federation/etcd-members", {"name": "newcomer", "peer_url": peer_url})
        if response.status_code == 503 and response.json()["error"] == "etcd_unhealthy":
            return None
        return api.ok(response)

    added = servers.wait_until(add, timeout=30, interval=0.5, what="etcd to accept a new member")
    try:
        assert added["member"]["name"] == "newcomer" and added["member"]["peer_urls"] == [peer_url]
        assert added["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
        expected = [f"{m.name}={m.peer_url}" for m in federation.etcd] + [f"newcomer={peer_url}"]
        assert sorted(added["ETCD_INITIAL_CLUSTER"].split(",")) == sorted(expected)
        members = api.ok(api.get("/federation/members"))["etcd"]
        newcomer = next(m for m in members if m["id"] == added["member"]["id"])
        assert newcomer["healthy"] is False and newcomer["name"] == ""  # added, never started
    finally:
        # Never started, it has no name yet: it is removed by its id.
        removed = api.ok(api.delete(f"/federation/etcd-members/{added['member']['id']}"))
    assert removed["removed"] is True and removed["member"]["id"] == added["member"]["id"]
    assert len(api.ok(api.get("/federation/members"))["etcd"]) == 3


def test_without_quorum_writes_fail_clearly_and_local_runs_merge_after_recovery(
    federation: Federation,
) -> None:
    pipeline, repo = init_everywhere(federation)
    before = gitutil.tip(repo, "ground-truth")
    dead = federation.etcd[1:]  # fed-a's own member stays up, but alone it has no quorum
    for member in dead:
        member.kill()
    try:
        a, b = federation.a.api, federation.b.api
        servers.wait_until(lambda: a.get("/health").status_code == 503, timeout=30, what="quorum loss seen")
        for response in (
            a.post("/registry/tools", {"name": unique("refused"), "image": "busybox"}),
            a.get("/federation/members"),
            a.get("/locks"),
            a.post("/pipeline/run", {"name": pipeline, "cron": "* * * * *", "scope": "federation"}),
            b.delete(f"/pipeline/{pipeline}"),
        ):
            error = assert_error(response, 503, "etcd_unavailable")
            assert "majority of the federation's etcd members" in error["message"], error
        members = a.get("/federation/members").json()
        assert [e["healthy"] for e in members["endpoints"]] == [True, False, False]  # own member first
        assert pipeline in [p["name"] for p in a.ok(a.get("/pipeline"))]
        # Local runs go on: committed and pushed to their node branches, merges queued.
        runs = {name: node.api.run(pipeline) for name, node in list(federation.nodes.items())[:2]}
        for name, run in runs.items():
            assert run["status"] == "succeeded", run
            (step,) = run["steps"]
            assert step["merge"] == "queued" and step["merge_commit"] is None
            assert gitutil.tip(repo, f"s-{name}") == step["output_commit"]
        assert gitutil.tip(repo, "ground-truth") == before
    finally:
        restart(dead, federation)
    recovered = time.monotonic()

    def merged() -> dict[str, dict] | None:
        steps = {
            n: federation.nodes[n].api.ok(federation.nodes[n].api.get(f"/runs/{r['id']}"))["steps"][0]
            for n, r in runs.items()
        }
        return steps if all(s["merge"] == "merged" for s in steps.values()) else None

    steps = servers.wait_until(merged, timeout=60, interval=0.2, what="the queued merges")
    print(f"\nqueued merges done {time.monotonic() - recovered:.1f} s after the quorum was back")
    for name, run in runs.items():
        assert gitutil.show(repo, "ground-truth", f"{name}.txt").strip() == run["id"]
        assert steps[name]["merge_commit"] in gitutil.git(repo, "rev-list", "ground-truth").split()
    # Each queued branch merged exactly once.
    merges = gitutil.git(repo, "rev-list", "--merges", f"{before}..ground-truth").split()
    assert sorted(gitutil.trailers(repo, m)["MAO-Run"] for m in merges) == sorted(
        r["id"] for r in runs.values()
    )
