"""Retry from the failed step, end to end (real executor, Docker, git, etcd), on SQLite and PostgreSQL:
the steps the retried run got done are reused (their commits, no attempt), the failed and skipped
steps and their dependants run, a step whose output dataset's ground-truth moved since runs again
saying why, a retry with the recorded version against one with the current definition, the answers
to bad requests, and ``maoctl pipeline retry --json``."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl
from tests.gitutil import show
from tests.integration.conftest import Node

APP = "/usr/src/app"
GIT = ["git", "-c", "user.name=member", "-c", "user.email=member@elsewhere.test"]


def member_commits(master: str, where: Path, path: str, text: str) -> str:
    """Another member, with plain git: ``path`` written into ``master``'s ground-truth (created if the
    dataset has none yet). Returns the commit."""
    clone = where / uuid.uuid4().hex
    subprocess.run([*GIT, "clone", "-q", master, str(clone)], check=True, capture_output=True)
    has = subprocess.run(["git", "-C", str(clone), "rev-parse", "-q", "--verify", "origin/ground-truth"],
                         capture_output=True).returncode == 0  # fmt: skip
    checkout = ["checkout", "-q", "ground-truth"] if has else ["checkout", "-q", "--orphan", "ground-truth"]
    subprocess.run([*GIT, "-C", str(clone), *checkout], check=True)
    (clone / path).write_text(text)
    subprocess.run([*GIT, "-C", str(clone), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(clone), "commit", "-qm", f"a member writes {path}"], check=True)
    subprocess.run([*GIT, "-C", str(clone), "push", "-q", "origin", "ground-truth"], check=True, capture_output=True)
    return subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["steps"]}


def ended(api: Api, run_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (run := api.ok(api.get(f"/runs/{run_id}")))["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    return dict(run)


def retry(api: Api, run_id: str, **body: Any) -> dict[str, Any]:
    """The retry, waited for: its record."""
    return dict(api.ok(api.post(f"/runs/{run_id}/retry", {**body, "wait": True})))


def test_a_retry_reuses_what_succeeded_and_runs_the_rest(node: Node, tmp_path: Path) -> None:
    api = node.api
    tool, name = unique("tool"), unique("retried")
    api.tool(tool)
    src, out_a, out_b, out_c, out_d = (unique(n) for n in ("src", "outa", "outb", "outc", "outd"))
    masters = {d: api.local_dataset(d) for d in (src, out_a, out_b, out_c, out_d)}
    member_commits(masters[src], tmp_path, "readme", "no ok yet\n")
    uuid_into = "cat /proc/sys/kernel/random/uuid > {APP}/data/{f}"
    steps = [
        {"name": "a", "tool": tool, "output_dataset": out_a, "cmd": ["sh", "-c", uuid_into.format(APP=APP, f="a.txt")]},
        # b fails until a member puts "ok" into src.
        {"name": "b", "tool": tool, "input_dataset": src, "output_dataset": out_b,
         "cmd": ["sh", "-c", f"cp {APP}/input/ok {APP}/data/b.txt"]},
        {"name": "c", "tool": tool, "output_dataset": out_c, "cmd": ["sh", "-c", f"echo c > {APP}/data/c.txt"]},
        {"name": "d", "tool": tool, "output_dataset": out_d, "needs": [],
         "cmd": ["sh", "-c", uuid_into.format(APP=APP, f="d.txt")]},
    ]  # fmt: skip
    api.ok(api.post("/pipeline/init", {"name": name, "steps": steps}))
    first = api.run(name)
    assert first["status"] == "failed", first
    before = steps_of(first)
    assert [before[s]["status"] for s in "abcd"] == ["succeeded", "failed", "skipped", "succeeded"]
    assert first["retry_of"] is None

    # A retry of a run that has not failed is a 409; bad requests are 400s, an unknown run a 404.
    assert_error(api.post(f"/runs/{uuid.uuid4().hex}/retry"), 404)
    assert_error(api.post("/runs/not-an-id!/retry"), 400, "invalid_id")
    assert_error(api.post(f"/runs/{first['id']}/retry", {"definition": "newest"}), 400)
    assert_error(api.post(f"/runs/{first['id']}/retry", {"from": "b"}), 400)
    assert_error(api.post(f"/runs/{first['id']}/retry", {"wait": "yes"}), 400)

    # Meanwhile: b's input gets what it lacked, and someone merges into d's output dataset.
    member_commits(masters[src], tmp_path, "ok", "ok now\n")
    moved = member_commits(masters[out_d], tmp_path, "other.txt", "someone else\n")

    started = api.post(f"/runs/{first['id']}/retry")
    assert started.status_code == 202, started.text
    answer = started.json()
    assert (answer["retry_of"], answer["pipeline"], answer["version"], answer["definition"]) == (
        first["id"], name, 1, "recorded"
    )
    # The plan as it stands at the request (ground-truth is judged when the retry starts).
    assert {p["step"]: p["action"] for p in answer["plan"]} == {"a": "reuse", "b": "run", "c": "run", "d": "reuse"}
    second = ended(api, answer["id"])
    assert second["status"] == "succeeded", second
    assert (second["retry_of"], second["trigger"], second["version"]) == (first["id"], "retry", 1)
    after = steps_of(second)
    # a: reused, its commits the old ones, nothing ran.
    assert after["a"]["status"] == "reused" and after["a"]["attempts"] == []
    assert after["a"]["reason"] == f"succeeded in run {first['id']}"
    for key in ("output_commit", "merge_commit", "image_id"):
        assert after["a"][key] == before["a"][key], key
    # b and c: ran (b failed before, c was skipped).
    assert after["b"]["status"] == "succeeded" and len(after["b"]["attempts"]) == 1
    assert after["b"]["reason"] == f"failed in run {first['id']}"
    assert after["c"]["status"] == "succeeded" and after["c"]["reason"] == f"skipped in run {first['id']}"
    assert show(masters[out_b], "ground-truth", "b.txt") == "ok now\n"
    # d: its output dataset moved since: it ran again, saying why.
    assert after["d"]["status"] == "succeeded" and len(after["d"]["attempts"]) == 1
    assert after["d"]["reason"].startswith(f"ground-truth of {out_d} moved since run {first['id']}")
    assert moved[:12] in after["d"]["reason"]
    assert after["d"]["merge_commit"] != before["d"]["merge_commit"]
    assert show(masters[out_d], "ground-truth", "other.txt") == "someone else\n"

    listed = {r["id"]: r["retry_of"] for r in api.ok(api.get("/runs", pipeline=name))}
    assert listed == {first["id"]: None, second["id"]: first["id"]}
    grid = api.ok(api.get("/runs/grid", pipelines=name))
    assert {r["id"]: r["retry_of"] for r in grid["pipelines"][0]["runs"]} == listed
    assert_error(api.post(f"/runs/{second['id']}/retry"), 409, "not_retryable")

    # The first run retried again: a is still reused; d's dataset moved since (the member, then the
    # retry), so d runs again.
    third = retry(api, first["id"])
    assert third["status"] == "succeeded" and third["retry_of"] == first["id"]
    assert steps_of(third)["a"]["status"] == "reused"
    assert steps_of(third)["d"]["status"] == "succeeded"

    # /metrics counts the reused steps.
    metrics = api.get("/metrics").text
    assert f'mao_steps_reused_total{{pipeline="{name}"}} 2.0' in metrics


def test_a_retry_with_the_recorded_version_or_the_current_definition(node: Node) -> None:
    api = node.api
    tool, name = unique("tool"), unique("versions")
    api.tool(tool)
    first_out, second_out = unique("first"), unique("second")
    masters = {d: api.local_dataset(d) for d in (first_out, second_out)}

    def init(second_cmd: str, first_cmd: str = f"echo 1 > {APP}/data/one") -> None:
        steps = [
            {"name": "one", "tool": tool, "output_dataset": first_out, "cmd": ["sh", "-c", first_cmd]},
            {"name": "two", "tool": tool, "output_dataset": second_out, "cmd": ["sh", "-c", second_cmd]},
        ]  # fmt: skip
        api.ok(api.post("/pipeline/init", {"name": name, "steps": steps}))

    init("exit 3")
    failed = api.run(name)
    assert (failed["status"], failed["version"]) == ("failed", 1)
    init(f"echo fixed > {APP}/data/two")  # version 2: step two fixed, step one as it was

    # Recorded (the default): version 1 again, so two fails again; one is reused.
    again = retry(api, failed["id"])
    assert (again["status"], again["version"], again["retry_of"]) == ("failed", 1, failed["id"])
    assert [s["status"] for s in again["steps"]] == ["reused", "failed"]
    # Current: version 2; one is unchanged (reused), two runs the fixed cmd.
    current = retry(api, failed["id"], definition="current")
    assert (current["status"], current["version"]) == ("succeeded", 2), current
    assert [s["status"] for s in current["steps"]] == ["reused", "succeeded"]
    assert show(masters[second_out], "ground-truth", "two") == "fixed\n"
    # A retry of the retry that failed works too (its reused step is done).
    init(f"echo fixed > {APP}/data/two", f"echo 11 > {APP}/data/one")  # version 3 changes step one
    latest = retry(api, again["id"], definition="current")
    assert (latest["status"], latest["version"]) == ("succeeded", 3), latest
    one = steps_of(latest)["one"]
    assert one["status"] == "succeeded" and one["reason"] == f"its definition changed since run {again['id']}"
    assert show(masters[first_out], "ground-truth", "one") == "11\n"

    # maoctl: --json waits and prints the retry's record.
    init("exit 4", f"echo 11 > {APP}/data/one")  # version 4 fails
    broken = api.run(name)
    assert broken["status"] == "failed"
    result = maoctl(api.url, "pipeline", "retry", "--id", broken["id"], "--json")
    assert result.exit_code == 1, result.output  # the retry failed too (version 4 again)
    shown = json.loads(result.stdout)
    assert (shown["retry_of"], shown["version"], shown["status"]) == (broken["id"], 4, "failed")
    init(f"echo 5 > {APP}/data/two", f"echo 11 > {APP}/data/one")
    fixed = maoctl(api.url, "pipeline", "retry", "--id", broken["id"], "--current", "--json")
    assert fixed.exit_code == 0, fixed.output
    record = json.loads(fixed.stdout)
    assert (record["version"], record["status"]) == (5, "succeeded")
    assert [s["status"] for s in record["steps"]] == ["reused", "succeeded"]
    listed = maoctl(api.url, "pipeline", "runs", "--name", name, "--limit", "50")
    assert listed.exit_code == 0 and f"retry of {broken['id']}" in listed.output, listed.output
    shown_run = maoctl(api.url, "pipeline", "run-show", "--id", record["id"])
    assert f"one: reused: succeeded in run {broken['id']}" in shown_run.output, shown_run.output
    human = maoctl(api.url, "pipeline", "retry", "--id", record["id"])
    assert human.exit_code == 1 and "only a failed or cancelled run can be retried" in human.output
    no_wait = maoctl(api.url, "pipeline", "retry", "--id", broken["id"], "--no-wait", "--json")
    assert no_wait.exit_code == 0, no_wait.output
    plan = json.loads(no_wait.stdout)
    assert [(p["step"], p["action"]) for p in plan["plan"]] == [("one", "reuse"), ("two", "run")]
    assert ended(api, plan["id"])["status"] == "failed"  # version 4: two exits 4


def test_a_cancelled_run_is_retried_and_a_busy_pipeline_refuses_a_retry(node: Node) -> None:
    api = node.api
    tool, name = unique("tool"), unique("cancelled")
    api.tool(tool)
    first_out, second_out = unique("first"), unique("second")
    masters = {d: api.local_dataset(d) for d in (first_out, second_out)}

    def init(second_cmd: str) -> None:
        steps = [
            {"name": "one", "tool": tool, "output_dataset": first_out, "cmd": ["sh", "-c", f"echo 1 > {APP}/data/one"]},
            {"name": "two", "tool": tool, "output_dataset": second_out, "cmd": ["sh", "-c", second_cmd]},
        ]  # fmt: skip
        api.ok(api.post("/pipeline/init", {"name": name, "steps": steps}))

    init("exit 3")
    failed = api.run(name)
    assert failed["status"] == "failed"
    init(f"echo started > {APP}/data/two; sleep 300")  # version 2: two runs until cancelled
    slow = api.run(name, wait=False)["id"]
    deadline = time.monotonic() + 120
    while steps_of(api.ok(api.get(f"/runs/{slow}")))["two"]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # The pipeline is busy: a retry goes through the same door as any run (409, nothing recorded).
    busy = api.post(f"/runs/{failed['id']}/retry")
    assert_error(busy, 409, "run_in_progress")
    assert_error(api.post(f"/runs/{slow}/retry"), 409, "not_retryable")  # still running
    api.ok(api.post(f"/runs/{slow}/cancel"))
    cancelled = ended(api, slow)
    assert cancelled["status"] == "cancelled"
    assert [r["trigger"] for r in api.ok(api.get("/runs", pipeline=name))].count("retry") == 0

    init(f"echo done > {APP}/data/two")  # version 3
    again = retry(api, slow, definition="current")
    assert (again["status"], again["version"], again["retry_of"]) == ("succeeded", 3, slow)
    assert {s["name"]: (s["status"], s["reason"]) for s in again["steps"]} == {
        "one": ("reused", f"succeeded in run {slow}"),
        "two": ("succeeded", f"cancelled in run {slow}"),
    }
    assert show(masters[second_out], "ground-truth", "two") == "done\n"
    assert show(masters[first_out], "ground-truth", "one") == "1\n"
