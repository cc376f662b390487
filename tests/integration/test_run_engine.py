"""The run engine end to end (real executor, Docker, git, etcd; SQLite and PostgreSQL): graphs of
steps, retries, fallback tools, stalls, cancel and the cache."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import docker
import pytest

from tests import gitutil, servers
from tests.api import Api, assert_error, unique

APP = "/usr/src/app"
ENDED = ("succeeded", "failed", "cancelled")


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def step(name: str, tool: str, output: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "output_dataset": output, "cmd": sh(script), **extra}


def wait_for_run(api: Api, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.ok(api.get(f"/runs/{run_id}"))
        if run["status"] in ENDED:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end within {timeout} s")


def init(api: Api, steps: list[dict[str, Any]], **extra: Any) -> str:
    pipeline = unique("engine")
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps, **extra}))
    return pipeline


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def containers_of(run_id: str) -> list[str]:
    client = docker.from_env()
    try:
        return [c.name for c in client.containers.list(all=True, ignore_removed=True, filters={"label": f"mao.run={run_id}"})]
    finally:
        client.close()


def test_a_diamond_runs_its_middle_steps_side_by_side(api: Api) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    repo = api.local_dataset(out)
    steps = [
        step("top", tool, out, f"echo top > {APP}/data/top.txt", needs=[]),
        step("left", tool, out, f"sleep 3; echo left > {APP}/data/left.txt", needs=["top"]),
        step("right", tool, out, f"sleep 3; echo right > {APP}/data/right.txt", needs=["top"]),
        step("bottom", tool, out, f"ls {APP}/data > {APP}/data/all.txt", needs=["left", "right"]),
    ]
    run = api.run(init(api, steps))
    assert run["status"] == "succeeded", run
    top, left, right, bottom = run["steps"]
    assert [s["needs"] for s in run["steps"]] == [[], ["top"], ["top"], ["left", "right"]]
    # The middle steps overlap in time, and both start after top and end before bottom starts.
    assert at(left["started_at"]) < at(right["ended_at"]) and at(right["started_at"]) < at(left["ended_at"])
    assert at(top["ended_at"]) <= min(at(left["started_at"]), at(right["started_at"]))
    assert max(at(left["ended_at"]), at(right["ended_at"])) <= at(bottom["started_at"])
    listed = gitutil.show(repo, "ground-truth", "all.txt").split()
    assert {"left.txt", "right.txt", "top.txt"} <= set(listed)
    assert all(len(s["attempts"]) == 1 and s["attempts"][0]["status"] == "succeeded" for s in run["steps"])


def test_a_prototype_pipeline_stays_a_straight_line(api: Api) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    steps = [
        {
            "name": name,
            "tool": tool,
            "env": {"DEMO_TOOL_ENV": "foo.bar.env"},
            "cmd": sh(f"sleep 1; echo {name} > {APP}/data/{name}.txt"),
            "docker_socket": False,
            "input_dataset": None,
            "output_dataset": out,
        }
        for name in ("one", "two", "three")
    ]
    run = api.run(init(api, steps))
    assert run["status"] == "succeeded", run
    assert [s["needs"] for s in run["steps"]] == [[], ["one"], ["two"]]
    assert [s["position"] for s in run["steps"]] == [0, 1, 2]
    for earlier, later in zip(run["steps"], run["steps"][1:], strict=False):
        assert at(earlier["ended_at"]) <= at(later["started_at"])


def test_a_failing_step_skips_what_needs_it_and_independent_steps_still_run(api: Api) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    steps = [
        step("bad", tool, out, "exit 3", needs=[]),
        step("after-bad", tool, out, "true", needs=["bad"]),
        step("free", tool, out, f"echo free > {APP}/data/free.txt", needs=[]),
    ]
    run = api.run(init(api, steps))
    assert run["status"] == "failed" and "exited with code 3" in run["error"]
    assert [s["status"] for s in run["steps"]] == ["failed", "skipped", "succeeded"]
    assert run["steps"][1]["attempts"] == [] and "bad" in run["steps"][1]["error"]


def test_a_step_failing_once_succeeds_on_its_second_attempt(api: Api) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    script = (
        f'echo "attempt $MAO_ATTEMPT of $MAO_TOOL"; echo "$MAO_ATTEMPT" > {APP}/data/attempt.txt; '
        '[ "$MAO_ATTEMPT" -ge 2 ]'
    )
    run = api.run(init(api, [step("flaky", tool, out, script, retries=2, retry_delay=0.2)]))
    assert run["status"] == "succeeded", run
    (flaky,) = run["steps"]
    assert [(a["attempt"], a["status"], a["exit_code"]) for a in flaky["attempts"]] == [
        (1, "failed", 1),
        (2, "succeeded", 0),
    ]
    assert all(a["tool"] == tool and a["image_id"].startswith("sha256:") for a in flaky["attempts"])
    assert f"attempt 2 of {tool}" in flaky["log_tail"]


def test_exhausted_attempts_are_rescued_by_the_fallback_tool(api: Api) -> None:
    tool, rescue, out = unique("tool"), unique("rescue"), unique("out")
    api.tool(tool)
    api.tool(rescue)
    repo = api.local_dataset(out)
    script = f'[ "$MAO_TOOL" = "{rescue}" ] && echo rescued > {APP}/data/r.txt'
    run = api.run(init(api, [step("s", tool, out, script, retries=1, retry_delay=0.1, fallback_tool=rescue)]))
    assert run["status"] == "succeeded", run
    attempts = run["steps"][0]["attempts"]
    assert [(a["tool"], a["status"]) for a in attempts] == [
        (tool, "failed"),
        (tool, "failed"),
        (rescue, "succeeded"),
    ]
    assert gitutil.show(repo, "ground-truth", "r.txt").strip() == "rescued"


def test_a_fallback_tool_must_be_registered(api: Api) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    missing = unique("missing")
    body = {"name": unique("p"), "steps": [step("s", tool, out, "true", fallback_tool=missing)]}
    error = assert_error(api.post("/pipeline/init", body), 400, "missing_registrations")
    assert error["errors"]["missing_tools"] == [missing]


def test_cancel_kills_the_container_and_pushes_nothing(api: Api, node) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    repo = api.local_dataset(out)
    steps = [
        step("long", tool, out, f"echo started; echo x > {APP}/data/x.txt; sleep 300"),
        step("next", tool, out, "true"),
    ]
    pipeline = init(api, steps)
    gt_before = gitutil.tip(repo, "ground-truth")
    run_id = api.run(pipeline, wait=False)["id"]
    servers.wait_until(lambda: containers_of(run_id) != [], timeout=60, what="the step's container")
    cancelled_at = time.monotonic()
    assert api.post(f"/runs/{run_id}/cancel").status_code == 202
    servers.wait_until(lambda: containers_of(run_id) == [], timeout=30, what="the container to go")
    gone_after = time.monotonic() - cancelled_at
    run = wait_for_run(api, run_id)
    assert run["status"] == "cancelled", run
    assert [s["status"] for s in run["steps"]] == ["cancelled", "cancelled"]
    assert run["steps"][0]["attempts"][0]["status"] == "cancelled"
    assert gitutil.tip(repo, "ground-truth") == gt_before
    assert f"long-{node.name}" not in gitutil.branches(repo)
    assert_error(api.post(f"/runs/{run_id}/cancel"), 409, "run_ended")
    assert_error(api.post(f"/runs/{unique('x').replace('-', '')}/cancel"), 404)
    # A new run of the pipeline may start at once: nothing is held.
    assert api.post("/pipeline/run", {"name": pipeline, "wait": False}).status_code == 202
    print(f"\ncontainer removed {gone_after:.2f} s after the cancel")


def test_a_silent_step_is_killed_as_stalled(api: Api) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    run = api.run(init(api, [step("quiet", tool, out, "echo hello; sleep 300", stall_timeout=2)]))
    assert run["status"] == "failed", run
    (attempt,) = run["steps"][0]["attempts"]
    assert attempt["status"] == "stalled" and "stalled" in run["error"]
    assert (at(attempt["ended_at"]) - at(attempt["started_at"])).total_seconds() < 60
    assert containers_of(run["id"]) == []


def test_a_cached_step_runs_no_container_the_second_time(api: Api) -> None:
    tool, raw, out = unique("tool"), unique("raw"), unique("out")
    api.tool(tool)
    api.local_dataset(raw)
    repo = api.local_dataset(out)
    steps = [
        step("count", tool, out, f"ls {APP}/input | wc -l > {APP}/data/n.txt", input_dataset=raw, cache=True)
    ]
    pipeline = init(api, steps)
    first = api.run(pipeline)
    assert first["status"] == "succeeded" and first["steps"][0]["status"] == "succeeded", first
    tip = gitutil.tip(repo, "ground-truth")
    second = api.run(pipeline)
    assert second["status"] == "succeeded", second
    (count,) = second["steps"]
    assert count["status"] == "cached" and count["attempts"] == []
    assert count["output_commit"] == first["steps"][0]["output_commit"]
    assert gitutil.tip(repo, "ground-truth") == tip


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([("a", ["b"]), ("b", ["a"])], ["cycle", "a -> b -> a"]),
        ([("a", []), ("b", ["nope"])], ["b needs 'nope'"]),
        ([("a", []), ("a", [])], ["unique", "a"]),
        ([("a", ["a"])], ["themselves", "a"]),
    ],
)
def test_bad_graphs_are_400_naming_the_steps(api: Api, steps, words) -> None:
    body = {
        "name": unique("p"),
        "steps": [{"name": n, "tool": "t", "output_dataset": "d", "needs": needs} for n, needs in steps],
    }
    error = assert_error(api.post("/pipeline/init", body), 400)
    for word in words:
        assert word in error["message"]


def test_unknown_step_fields_are_400_naming_them(api: Api) -> None:
    body = {
        "name": unique("p"),
        "steps": [{"name": "s", "tool": "t", "output_dataset": "d", "retires": 3}],
    }
    error = assert_error(api.post("/pipeline/init", body), 400)
    assert "retires" in error["message"]


def test_run_timeout_bounds_the_whole_run(api: Api) -> None:
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    steps = [step("long", tool, out, "echo on; sleep 300"), step("later", tool, out, "true")]
    run = api.run(init(api, steps, run_timeout=3))
    assert run["status"] == "failed" and "run_timeout of 3 s" in run["error"], run
    assert [s["status"] for s in run["steps"]] == ["failed", "skipped"]
    assert run["steps"][0]["attempts"][0]["status"] == "timed_out"
    assert (at(run["ended_at"]) - at(run["started_at"])).total_seconds() < 60
    servers.wait_until(lambda: containers_of(run["id"]) == [], timeout=30, what="no container left")
