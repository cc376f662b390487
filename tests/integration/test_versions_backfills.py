"""Pipeline versions and backfills as objects, end to end (real executor, Docker, git, etcd), on SQLite
and PostgreSQL: versions recorded only when an init changes the pipeline, the difference between two,
a run (and a backfill) with an earlier version whose step ran the old cmd, a backfill's progress
counts, a backfill cancelled across a restart (queued runs cancelled, nothing started after, the
running one stopped by choice), and the maoctl commands with --json."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import servers
from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl
from tests.gitutil import show
from tests.integration.conftest import Node, orchestrator_env

APP = "/usr/src/app"
ENDED = ("succeeded", "failed", "cancelled")


def poll(check: Callable[[], Any], timeout: float = 120.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def ended(api: Api, run_ids: list[str], timeout: float = 180) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        runs = [api.ok(api.get(f"/runs/{r}")) for r in run_ids]
        return runs if all(r["status"] in ENDED for r in runs) else None

    return list(poll(check, timeout, f"runs {run_ids} to end"))


def tool_runs(run_id: str) -> bool:
    """The run's tool container runs on the engine (from there on a restart adopts it; a run stopped
    before, its container not yet created, cannot be taken up)."""
    client = docker.from_env()
    try:
        return bool(client.containers.list(ignore_removed=True, filters={"label": f"mao.run={run_id}", "status": "running"}))
    finally:
        client.close()


def ctl_json(api: Api, *args: str) -> Any:
    result = maoctl(api.url, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def init(api: Api, name: str, tool: str, dataset: str, script: str, **step: Any) -> dict[str, Any]:
    body = {"name": name, "steps": [{"name": "write", "tool": tool, "output_dataset": dataset,
                                     "cmd": ["sh", "-c", script], **step}]}  # fmt: skip
    return dict(api.ok(api.post("/pipeline/init", body)))


def test_versions_the_difference_and_a_run_with_an_old_version(node: Node) -> None:
    api = node.api
    tool, dataset, name = unique("tool"), unique("ver"), unique("versioned")
    api.tool(tool)
    master = api.local_dataset(dataset)
    old = f"echo old > {APP}/data/said.txt"
    new = f"echo new > {APP}/data/said.txt"
    first = init(api, name, tool, dataset, old)
    assert (first["version"], first["new_version"], first["ok"]) == (1, True, True)
    # The same definition again, spelt differently (cmd env numbers, a default given): no version.
    again = init(api, name, tool, dataset, old, retries=0, env=None)
    assert (again["version"], again["new_version"], again["hash"]) == (1, False, first["hash"])
    second = init(api, name, tool, dataset, new, env={"LEVEL": 3})
    assert (second["version"], second["new_version"]) == (2, True) and second["hash"] != first["hash"]
    assert api.ok(api.get(f"/pipeline/{name}"))["version"] == 2
    assert next(p for p in api.ok(api.get("/pipeline")) if p["name"] == name)["version"] == 2

    versions = api.ok(api.get(f"/pipeline/{name}/versions"))
    assert [(v["version"], v["current"]) for v in versions] == [(2, True), (1, False)]
    assert versions[1]["changes"] == "first version"
    assert versions[0]["changes"] == "changed step write (env.LEVEL, cmd)"
    assert versions[0]["created_by"] == node.name  # the admin token names no one: the instance
    one = api.ok(api.get(f"/pipeline/{name}/versions/1"))
    assert one["definition"]["steps"][0]["cmd"] == ["sh", "-c", old] and one["hash"] == first["hash"]

    diff = api.ok(api.get(f"/pipeline/{name}/versions/2/diff", against="1"))
    assert diff["same"] is False and diff["pipeline_fields"] == []
    (step,) = diff["steps"]
    assert (step["step"], step["change"]) == ("write", "changed")
    assert {f["field"]: (f["before"], f["after"]) for f in step["fields"]} == {
        "cmd": (["sh", "-c", old], ["sh", "-c", new]),
        "env.LEVEL": (None, "3"),
    }
    assert f'-        "echo old > {APP}/data/said.txt"' in diff["unified"]
    assert f'+        "echo new > {APP}/data/said.txt"' in diff["unified"]
    assert api.ok(api.get(f"/pipeline/{name}/versions/2/diff")) == diff  # against the one before
    backwards = api.ok(api.get(f"/pipeline/{name}/versions/1/diff", against="2"))
    assert {f["field"]: f["after"] for f in backwards["steps"][0]["fields"]} == {"cmd": ["sh", "-c", old], "env.LEVEL": None}
    assert api.ok(api.get(f"/pipeline/{name}/versions/1/diff"))["against"] is None

    # Bad input: a JSON error with the right status, never a 500.
    assert_error(api.get(f"/pipeline/{name}/versions/9"), 404, "unknown_version")
    assert_error(api.get(f"/pipeline/{name}/versions/0"), 400, "invalid_version")
    assert_error(api.get(f"/pipeline/{name}/versions/x/diff"), 400, "invalid_version")
    assert_error(api.get(f"/pipeline/{name}/versions/2/diff", against="9"), 404, "unknown_version")
    assert_error(api.get(f"/pipeline/{name}/versions/2/diff", against="-1"), 400, "invalid_version")
    assert_error(api.get(f"/pipeline/{unique('never')}/versions"), 404)
    assert_error(api.post("/pipeline/run", {"name": name, "version": 9}), 404, "unknown_version")
    assert_error(api.post("/pipeline/run", {"name": name, "version": "1"}), 400, "invalid_request")
    assert_error(api.post("/pipeline/run", {"name": name, "version": 1, "cron": "0 * * * *"}), 400, "not_supported")
    trigger = {"name": name, "version": 1, "trigger": {"dataset": dataset}}
    assert_error(api.post("/pipeline/run", trigger), 400, "not_supported")

    # A run with version 1: its step ran the old cmd; a run without: the current one.
    old_run = api.run(name, version=1)
    assert (old_run["status"], old_run["version"]) == ("succeeded", 1), old_run
    assert show(master, "ground-truth", "said.txt") == "old\n"
    current = api.run(name)
    assert (current["status"], current["version"]) == ("succeeded", 2)
    assert show(master, "ground-truth", "said.txt") == "new\n"
    listed = {r["id"]: r["version"] for r in api.ok(api.get("/runs", pipeline=name))}
    assert listed == {old_run["id"]: 1, current["id"]: 2}

    # maoctl: the list, one version, the difference, a run with --version (all --json).
    assert [v["version"] for v in ctl_json(api, "pipeline", "versions", "--name", name)] == [2, 1]
    shown = ctl_json(api, "pipeline", "versions", "--name", name, "--version", "1")
    assert shown["definition"]["steps"][0]["cmd"][-1] == old
    assert ctl_json(api, "pipeline", "diff", "--name", name, "--from", "1", "--to", "2") == diff
    assert ctl_json(api, "pipeline", "diff", "--name", name) == diff  # the current one against the one before
    ran = ctl_json(api, "pipeline", "run", "--name", name, "--version", "1")
    assert (ran["status"], ran["version"]) == ("succeeded", 1)
    assert show(master, "ground-truth", "said.txt") == "old\n"
    human = maoctl(api.url, "pipeline", "diff", "--name", name, "--from", "1", "--to", "2")
    assert human.exit_code == 0 and "env.LEVEL" in human.output and "+        \"echo new" in human.output

    # A backfill may ask for a version too: each of its runs takes it.
    span = {"name": name, "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z", "cron": "0 * * * *"}
    backfill = api.ok(api.post("/pipeline/backfill", {**span, "version": 1}))
    assert backfill["version"] == 1
    runs = ended(api, backfill["runs"])
    assert [(r["status"], r["version"], r["backfill_id"]) for r in runs] == [("succeeded", 1, backfill["backfill_id"])] * 2
    assert show(master, "ground-truth", "said.txt") == "old\n"

    # Deleting the pipeline keeps its versions (its runs name them); initialising it again continues.
    api.ok(api.delete(f"/pipeline/{name}"))
    assert [v["current"] for v in api.ok(api.get(f"/pipeline/{name}/versions"))] == [False, False]
    assert_error(api.post("/pipeline/run", {"name": name, "version": 1}), 404)
    assert init(api, name, tool, dataset, f"echo third > {APP}/data/said.txt")["version"] == 3


def test_inits_of_one_pipeline_at_the_same_moment(node: Node) -> None:
    """Each init either records its own version or is a 409 to send again; never a 500, never two
    answers with one number, never a number without its answer."""
    api = node.api
    tool, dataset, name = unique("tool"), unique("same"), unique("raced")
    api.tool(tool)
    api.local_dataset(dataset)

    def send(n: int) -> tuple[int, dict[str, Any]]:
        step = {"name": "s", "tool": tool, "output_dataset": dataset, "cmd": ["sh", "-c", f"echo {n}"]}
        response = api.post("/pipeline/init", {"name": name, "steps": [step]})
        return response.status_code, response.json()

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    assert {status for status, _ in answers} <= {200, 409}, answers
    assert all(body["error"] == "concurrent_init" for status, body in answers if status == 409), answers
    numbers = sorted(body["version"] for status, body in answers if status == 200)
    recorded = [v["version"] for v in api.ok(api.get(f"/pipeline/{name}/versions"))]
    assert numbers == sorted(recorded) == list(range(1, len(numbers) + 1)), (answers, recorded)


def test_what_get_answers_initialises_again_and_its_version_guards_the_edit(node: Node) -> None:
    """GET /pipeline/{name} is a valid init body; its version makes the init a compare-and-set:
    an edit of a version that is no longer the latest is a 409 and stores nothing."""
    api = node.api
    tool, dataset, name = unique("tool"), unique("cas"), unique("edited")
    api.tool(tool)
    api.local_dataset(dataset)
    init(api, name, tool, dataset, "echo 1")
    read = api.ok(api.get(f"/pipeline/{name}"))
    assert read["version"] == 1
    again = api.ok(api.post("/pipeline/init", read))
    assert (again["version"], again["new_version"]) == (1, False)

    # Two editors read version 1; the first edit lands as 2, the second is refused, whatever it says.
    def edited(text: str) -> dict[str, Any]:
        steps = [{**read["steps"][0], "cmd": ["sh", "-c", text]}]
        return {**read, "steps": steps}

    assert api.ok(api.post("/pipeline/init", edited("echo first")))["version"] == 2
    for late in (edited("echo second"), edited("echo first")):
        assert_error(api.post("/pipeline/init", late), 409, "version_conflict")
    versions = api.ok(api.get(f"/pipeline/{name}/versions"))
    assert sorted(v["version"] for v in versions) == [1, 2]
    assert api.ok(api.get(f"/pipeline/{name}"))["steps"][0]["cmd"] == ["sh", "-c", "echo first"]
    # A version for a pipeline this instance does not have is a conflict too; without one, a create.
    other = {**edited("echo 3"), "name": unique("copied")}
    assert_error(api.post("/pipeline/init", other), 409, "version_conflict")
    assert api.ok(api.post("/pipeline/init", {k: v for k, v in other.items() if k != "version"}))["version"] == 1
    for bad in (0, -1, 1.5, "two"):
        assert_error(api.post("/pipeline/init", {**read, "version": bad}), 400)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def restartable(
    request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor, busybox_image
) -> Iterator[Node]:
    """An instance of its own (the tests stop and start it), once per database backend."""
    name = unique(f"node-backfills-{request.param}")
    data_dir = servers_tmp / name
    extra = {}
    if request.param == "postgres":
        extra["MAO_DATABASE_URL"] = request.getfixturevalue("postgres").create_database(
            f"bf_{uuid.uuid4().hex[:8]}"
        )
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor, **extra)
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    yield node
    node.service.stop()


def restart(node: Node) -> None:
    node.service.stop()
    node.service.process.start()
    node.service.wait_ready()


def pipeline(api: Api, script: str) -> str:
    tool, dataset, name = unique("tool"), unique("bf"), unique("backfilled")
    api.tool(tool)
    api.local_dataset(dataset)
    init(api, name, tool, dataset, script)
    return name


def start_backfill(api: Api, name: str, hours: int, **extra: Any) -> dict[str, Any]:
    span = {"name": name, "from": "2026-02-01T00:00:00Z", "to": f"2026-02-01T0{hours - 1}:00:00Z", "cron": "0 * * * *"}
    response = api.post("/pipeline/backfill", {**span, **extra})
    assert response.status_code == 202, response.text
    return dict(response.json())


def progress(api: Api, backfill_id: str) -> dict[str, Any]:
    return dict(api.ok(api.get(f"/backfills/{backfill_id}")))


def test_progress_counts(restartable: Node) -> None:
    api = restartable.api
    # The second run writes n=2 and fails; a failed run commits nothing, so the third fails too.
    script = f'n=$(cat {APP}/data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {APP}/data/n; [ "$n" != 2 ]'
    name = pipeline(api, script)
    started = start_backfill(api, name, 3, priority=2)
    backfill_id = started["backfill_id"]
    assert backfill_id not in started["runs"]  # its own id now, not its first run's
    assert (started["status"], started["count"], len(started["runs"])) == ("queued", 3, 3)
    ended(api, started["runs"])
    found = progress(api, backfill_id)
    assert found["progress"] == {"total": 3, "done": 1, "failed": 2, "cancelled": 0, "queued": 0, "running": 0, "ended": 3}
    assert (found["status"], found["pipeline"], found["priority"], found["cron"]) == ("failed", name, 2, "0 * * * *")
    assert [t["run_id"] for t in found["ticks"]] == started["runs"]
    assert [t["tick_at"] for t in found["ticks"]] == [f"2026-02-01T0{h}:00:00+00:00" for h in range(3)]
    assert [t["status"] for t in found["ticks"]] == ["succeeded", "failed", "failed"]
    assert all(t["version"] == 1 for t in found["ticks"])  # each run recorded the version it took
    listed = api.ok(api.get("/backfills", pipeline=name))
    assert [b["id"] for b in listed] == [backfill_id] and listed[0]["progress"] == found["progress"]
    assert api.ok(api.get("/backfills", pipeline=name, active="true")) == []
    assert ctl_json(api, "pipeline", "backfill", "--id", backfill_id) == found
    assert [b["id"] for b in ctl_json(api, "pipeline", "backfills", "--name", name)] == [backfill_id]
    human = maoctl(api.url, "pipeline", "backfill", "--id", backfill_id)
    assert human.exit_code == 0 and "3/3 ended: 1 done, 2 failed" in human.output, human.output
    assert_error(api.post(f"/backfills/{backfill_id}/cancel"), 409, "backfill_ended")
    assert_error(api.get(f"/backfills/{uuid.uuid4().hex}"), 404)
    assert_error(api.get("/backfills/not-an-id!"), 400, "invalid_id")
    assert_error(api.post(f"/backfills/{backfill_id}/cancel", {"running": "yes"}), 400)
    assert_error(api.post(f"/backfills/{backfill_id}/cancel", {"stop": True}), 400)
    dry = api.ok(api.post("/pipeline/backfill", {"name": name, "from": "2026-02-01T00:00:00Z", "to": "2026-02-01T01:00:00Z", "cron": "0 * * * *", "dry_run": True}))  # fmt: skip
    assert dry["count"] == 2 and "backfill_id" not in dry
    assert len(api.ok(api.get("/backfills", pipeline=name))) == 1  # a dry run records none


def test_a_backfill_cancelled_across_a_restart(restartable: Node) -> None:
    api = restartable.api
    # Backfill A: its first tick runs (for long), three wait; cancelled before a restart.
    hold = pipeline(api, "sleep 300")
    a = start_backfill(api, hold, 4)
    poll(lambda: progress(api, a["backfill_id"])["progress"]["running"] == 1, what="A's first tick to run")
    found = progress(api, a["backfill_id"])
    assert (found["status"], found["progress"]["queued"], found["progress"]["ended"]) == ("running", 3, 0)
    cancelled = ctl_json(api, "pipeline", "backfill", "--id", a["backfill_id"], "--cancel")
    assert cancelled["cancelled_runs"] == a["runs"][1:] and cancelled["stopping_runs"] == []
    assert cancelled["progress"]["cancelled"] == 3 and cancelled["progress"]["running"] == 1
    assert cancelled["cancelled_at"] and cancelled["status"] == "running"  # its running run goes on
    # Backfill B of another pipeline: queued behind its own pipeline's manual run.
    other = pipeline(api, "sleep 300")
    blocker = api.ok(api.post("/pipeline/run", {"name": other, "wait": False}))["id"]
    poll(lambda: api.ok(api.get(f"/runs/{blocker}"))["status"] == "running", what="the blocker to run")
    b = start_backfill(api, other, 3)
    assert progress(api, b["backfill_id"])["status"] == "queued"

    for run_id in (a["runs"][0], blocker):
        poll(lambda run_id=run_id: tool_runs(run_id), what=f"the tool of run {run_id} to run")
    restart(restartable)
    # A: the running run went on across the restart (its attempt adopted); its cancelled runs
    # stayed cancelled. B survived the restart, still queued behind the blocker (adopted too).
    assert api.ok(api.get(f"/runs/{a['runs'][0]}"))["status"] == "running"
    assert progress(api, b["backfill_id"])["status"] == "queued"
    for run_id in (a["runs"][0], blocker):
        api.ok(api.post(f"/runs/{run_id}/cancel"))
    a_runs = ended(api, a["runs"])
    assert [r["status"] for r in a_runs] == ["cancelled"] * 4
    assert all(r["started_at"] is None for r in a_runs[1:])
    # B's first tick runs once the blocker ended.
    poll(lambda: progress(api, b["backfill_id"])["progress"]["running"] == 1, what="B's first tick to run")
    assert progress(api, b["backfill_id"])["progress"]["queued"] == 2
    answer = api.ok(api.post(f"/backfills/{b['backfill_id']}/cancel", {"running": True}))
    assert answer["cancelled_runs"] == b["runs"][1:] and answer["stopping_runs"] == b["runs"][:1]
    b_runs = ended(api, b["runs"])
    assert [r["status"] for r in b_runs] == ["cancelled"] * 3
    assert b_runs[0]["started_at"] and all(r["started_at"] is None for r in b_runs[1:])

    # Nothing starts after: not now, not after another restart.
    restart(restartable)
    for backfill, expected in ((a, ["cancelled"] * 4), (b, ["cancelled"] * 3)):
        found = progress(api, backfill["backfill_id"])
        assert [t["status"] for t in found["ticks"]] == expected
        assert found["status"] == "cancelled" and found["progress"]["queued"] == 0
    assert [e for e in api.ok(api.get("/queue")) if e["pipeline"] in (hold, other)] == []
    assert found["cancelled_running"] is True
    assert {x["id"] for x in api.ok(api.get("/backfills", active="false"))} >= {a["backfill_id"], b["backfill_id"]}
