"""Cron schedules through the API: validation, persistence across restarts, a real tick."""

from __future__ import annotations

import time

import pytest

from tests.api import Api, assert_error, unique


def init_pipeline(api: Api, command: str = "date > /usr/src/app/data/now") -> str:
    tool, data, pipeline = unique("tool"), unique("data"), unique("cron")
    api.tool(tool)
    api.local_dataset(data)
    step = {
        "name": "tick",
        "tool": tool,
        "input_dataset": None,
        "output_dataset": data,
        "env": None,
        "cmd": ["sh", "-c", command],
        "docker_socket": False,
    }
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    return pipeline


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"cron": "cron-string"}, "invalid_cron"),
        ({"cron": "* * * *"}, "invalid_cron"),
        ({"cron": "*/5 * * * * *"}, "invalid_cron"),
        ({"cron": "61 * * * *"}, "invalid_cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "invalid_timezone"),
        ({"cron": "* * * * *", "timezone": "../../etc/passwd"}, "invalid_timezone"),
    ],
)
def test_invalid_schedules_are_400(api: Api, body: dict, code: str) -> None:
    pipeline = unique("anything")
    assert_error(api.post("/pipeline/run", {"name": pipeline, **body}), 400, code)


def test_schedule_for_unknown_pipeline_is_404(api: Api) -> None:
    assert_error(api.post("/pipeline/run", {"name": unique("nope"), "cron": "* * * * *"}), 404)
    assert_error(api.delete("/jobs/0123abcd"), 404)


def test_schedules_survive_a_restart(node) -> None:
    api = node.api
    pipeline = init_pipeline(api)
    job = api.ok(
        api.post("/pipeline/run", {"name": pipeline, "cron": "30 4 * * 1", "timezone": "Europe/Zurich"})
    )
    assert job["pipeline"] == pipeline
    jobs = api.ok(api.get("/jobs"))
    assert jobs[job["job_id"]].startswith("20") and "+00:00" in jobs[job["job_id"]]
    node.restart()
    assert api.ok(api.get("/jobs"))[job["job_id"]] == jobs[job["job_id"]]
    schedule = next(s for s in api.ok(api.get("/schedules")) if s["id"] == job["job_id"])
    assert schedule["cron"] == "30 4 * * 1" and schedule["timezone"] == "Europe/Zurich"
    api.ok(api.delete(f"/jobs/{job['job_id']}"))
    assert job["job_id"] not in api.ok(api.get("/jobs"))
    assert_error(api.delete(f"/jobs/{job['job_id']}"), 404)


def test_a_minute_schedule_really_fires(sqlite_node) -> None:
    """Waits for the next minute boundary (at most ~60 s): the one test that watches the clock."""
    api = sqlite_node.api
    pipeline = init_pipeline(api)
    job = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "* * * * *"}))["job_id"]
    deadline = time.monotonic() + 90
    ticks: list = []
    while time.monotonic() < deadline and not ticks:
        time.sleep(1)
        schedule = next(s for s in api.ok(api.get("/schedules")) if s["id"] == job)
        ticks = [t for t in schedule["ticks"] if t["outcome"] == "fired"]
    assert ticks, "no tick fired within 90 s"
    api.ok(api.delete(f"/jobs/{job}"))
    run_id = ticks[0]["run_id"]
    for _ in range(100):
        run = api.ok(api.get(f"/runs/{run_id}"))
        if run["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert run["status"] == "succeeded" and run["trigger"] == "cron" and run["schedule_id"] == job
    assert ticks[0]["due_at"].endswith(":00+00:00")
