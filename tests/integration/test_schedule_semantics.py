"""Schedule semantics through the API: the prototype's replace and DELETE by pipeline name, policies
that do not apply federation-wide (overlap ``allow``: test_overlap_allow.py; overlap queue:
tests/integration/test_admission.py), overlap replace, impossible crons, backfill (dry run and real)
and a local data trigger."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.api import Api, assert_error, unique

from .test_schedules import init_pipeline


def poll(check: Callable[[], Any], timeout: float = 120.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def test_scheduling_again_replaces_and_delete_by_pipeline_name_removes(api: Api) -> None:
    pipeline = init_pipeline(api)
    first = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "0 3 * * *"}))
    again = api.ok(
        api.post("/pipeline/run", {"name": pipeline, "cron": "30 4 * * *", "timezone": "Europe/Zurich"})
    )
    assert again["job_id"] == first["job_id"] and again["cron"] == "30 4 * * *"
    mine = [s for s in api.ok(api.get("/schedules")) if s["pipeline"] == pipeline]
    assert [(s["id"], s["cron"], s["catchup"], s["overlap"]) for s in mine] == [
        (first["job_id"], "30 4 * * *", "latest", "skip")
    ]
    extra = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "0 5 * * *", "add": True}))
    assert extra["job_id"] != first["job_id"]
    jobs = api.ok(api.get("/jobs"))
    assert isinstance(jobs[first["job_id"]], str) and isinstance(jobs[extra["job_id"]], str)
    removed = api.ok(api.delete(f"/jobs/{pipeline}"))
    assert removed["deleted"] and sorted(removed["removed"]) == sorted([first["job_id"], extra["job_id"]])
    jobs = api.ok(api.get("/jobs"))
    assert first["job_id"] not in jobs and extra["job_id"] not in jobs
    assert_error(api.delete(f"/jobs/{pipeline}"), 404)
    # Ids stay valid too.
    job = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "0 3 * * *"}))["job_id"]
    assert api.ok(api.delete(f"/jobs/{job}"))["scope"] == "instance"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"cron": "0 0 31 2 *"}, "invalid_cron"),
        ({"cron": "0 0 * * *", "overlap": "queue", "scope": "federation"}, "not_supported"),
        ({"cron": "0 0 * * *", "priority": 1001, "scope": "federation"}, "invalid_request"),
        ({"cron": "0 0 * * *", "priority": 1001}, "invalid_request"),
        ({"cron": "0 0 * * *", "priority": "5"}, "invalid_request"),
        ({"cron": "0 0 * * *", "overlap": "replace", "scope": "federation"}, "not_supported"),
        ({"trigger": {"dataset": "x"}, "overlap": "replace", "scope": "federation"}, "not_supported"),
        ({"cron": "0 0 * * *", "overlap": "sometimes"}, "invalid_request"),
        ({"cron": "0 0 * * *", "catchup": "most"}, "invalid_request"),
        ({"cron": "0 0 * * *", "catchup_window": 0}, "invalid_request"),
        ({"cron": "0 0 * * *", "catchups": "all"}, "invalid_request"),  # unknown fields are errors
        ({"cron": "0 0 * * *", "add": "yes"}, "invalid_request"),
        ({"trigger": {"dataset": "../x"}}, "invalid_request"),
        ({"trigger": {"dataset": "x"}, "cron": "0 0 * * *"}, "invalid_request"),
        ({"cron": "0 0 * * *", "scope": "federation", "catchup": "some"}, "invalid_request"),
    ],
)
def test_bad_schedule_requests_are_400(api: Api, body: dict, code: str) -> None:
    assert_error(api.post("/pipeline/run", {"name": unique("any"), **body}), 400, code)


def _runs(api: Api, pipeline: str) -> list[dict]:
    return list(reversed(api.ok(api.get("/runs", pipeline=pipeline, limit=100))))


def test_backfill_dry_run_then_real_runs_in_order_one_at_a_time(api: Api) -> None:
    pipeline = init_pipeline(api, "sleep 1; date > /usr/src/app/data/now")
    span = {"name": pipeline, "from": "2026-03-29T00:00:00+01:00", "to": "2026-03-29T04:00:00+02:00"}
    assert_error(api.post("/pipeline/backfill", span), 400, "invalid_cron")  # no schedule, no cron
    api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "30 * * * *", "timezone": "Europe/Zurich"}))
    dry = api.ok(api.post("/pipeline/backfill", {**span, "dry_run": True}))
    # Local 00:30, 01:30, then 02:30 skipped by the spring-forward fires at 03:00, then 03:30.
    expected = [
        "2026-03-28T23:30:00+00:00",
        "2026-03-29T00:30:00+00:00",
        "2026-03-29T01:00:00+00:00",
        "2026-03-29T01:30:00+00:00",
    ]
    assert dry["ticks"] == expected and dry["count"] == 4
    assert _runs(api, pipeline) == []
    response = api.post("/pipeline/backfill", {**span, "cron": "0 * * * *"})
    assert response.status_code == 202, response.text
    hourly = response.json()["ticks"]
    # A cron given without a timezone is in UTC: 23:00 to 02:00 UTC, both ends included.
    assert hourly == [f"2026-03-{d}:00:00+00:00" for d in ("28T23", "29T00", "29T01", "29T02")]
    runs = poll(
        lambda: (
            (r := _runs(api, pipeline)) and len(r) == 4 and all(x["status"] == "succeeded" for x in r) and r
        )
    )
    assert runs, f"backfill did not finish: {_runs(api, pipeline)}"
    assert [r["trigger"] for r in runs] == ["backfill"] * 4
    assert [r["tick_at"] for r in runs] == hourly
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later["started_at"] >= earlier["ended_at"]  # one at a time


def test_backfill_bad_requests(api: Api) -> None:
    pipeline = init_pipeline(api)
    base = {"name": pipeline, "cron": "* * * * *"}
    assert_error(
        api.post(
            "/pipeline/backfill", {**base, "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
        ),
        400,
    )
    assert_error(
        api.post("/pipeline/backfill", {**base, "from": "2026-01-01T00:00:00", "to": "2026-01-01T01:00:00Z"}),
        400,
    )
    too_many = {**base, "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    assert_error(api.post("/pipeline/backfill", too_many), 400, "too_many_ticks")
    assert_error(api.post("/pipeline/backfill", {**too_many, "cron": "0 0 31 2 *"}), 400, "invalid_cron")
    assert_error(api.post("/pipeline/backfill", {**too_many, "dryrun": True}), 400, "invalid_request")
    assert_error(api.post("/pipeline/backfill", {**too_many, "name": unique("nope")}), 404)
    for cron in ("0 1 * * *", "0 2 * * *"):
        api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": cron, "add": True}))
    ambiguous = {"name": pipeline, "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    assert_error(api.post("/pipeline/backfill", ambiguous), 400, "invalid_cron")
    api.ok(api.delete(f"/jobs/{pipeline}"))


def test_a_data_trigger_fires_once_per_upstream_merge(sqlite_node) -> None:
    api = sqlite_node.api
    tool, upstream_data, downstream_data = unique("tool"), unique("up"), unique("down")
    upstream, downstream = unique("producer"), unique("consumer")
    api.tool(tool)
    api.local_dataset(upstream_data)
    api.local_dataset(downstream_data)
    app = "/usr/src/app"
    api.ok(
        api.post(
            "/pipeline/init",
            {
                "name": upstream,
                "steps": [
                    {
                        "name": "make",
                        "tool": tool,
                        "output_dataset": upstream_data,
                        "cmd": ["sh", "-c", f"echo $MAO_RUN_ID > {app}/data/now"],
                    }
                ],
            },
        )
    )
    api.ok(
        api.post(
            "/pipeline/init",
            {
                "name": downstream,
                "steps": [
                    {
                        "name": "use",
                        "tool": tool,
                        "input_dataset": upstream_data,
                        "output_dataset": downstream_data,
                        "cmd": ["sh", "-c", f"cp {app}/input/now {app}/data/seen"],
                    }
                ],
            },
        )
    )
    assert_error(
        api.post("/pipeline/run", {"name": downstream, "trigger": {"dataset": downstream_data}}),
        400,
        "trigger_loop",
    )
    assert_error(api.post("/pipeline/run", {"name": downstream, "trigger": {"dataset": unique("nope")}}), 404)
    job = api.ok(api.post("/pipeline/run", {"name": downstream, "trigger": {"dataset": upstream_data}}))
    assert job["pipeline"] == downstream and job["job_id"]
    assert api.ok(api.get("/jobs"))[job["job_id"]] is None
    merges = []
    for _ in range(2):
        run = api.run(upstream)
        assert run["status"] == "succeeded", run
        merges.append(run["steps"][0]["merge_commit"])
        # The downstream run of this merge, before the next upstream run (they would coalesce).
        wanted = len(merges)

        def settled(n: int = wanted) -> bool:
            runs = _runs(api, downstream)
            return len(runs) == n and runs[-1]["status"] == "succeeded"

        assert poll(settled), _runs(api, downstream)
    time.sleep(1.0)  # nothing more comes
    runs = _runs(api, downstream)
    assert [r["trigger"] for r in runs] == ["dataset", "dataset"]
    assert [r["trigger_commit"] for r in runs] == merges
    assert {r["trigger_dataset"] for r in runs} == {upstream_data} and {r["schedule_id"] for r in runs} == {
        job["job_id"]
    }
    schedule = next(s for s in api.ok(api.get("/schedules")) if s["id"] == job["job_id"])
    assert schedule["trigger"] == {"dataset": upstream_data}
    assert [t["outcome"] for t in schedule["ticks"]] == ["fired", "fired"]
    api.ok(api.delete(f"/jobs/{job['job_id']}"))
    api.run(upstream)
    time.sleep(1.5)
    assert len(_runs(api, downstream)) == 2  # removed like any schedule


@pytest.mark.slow
def test_catch_up_after_a_real_stopped_minute(sqlite_node) -> None:
    """The instance is stopped across a real minute boundary (about a minute): at start the missed
    tick runs once as the catch-up (catchup 'latest'), with the tick time it stands for."""
    api = sqlite_node.api
    pipeline = init_pipeline(api)
    while not 2 <= time.time() % 60 <= 40:  # room before the next boundary for the stop
        time.sleep(0.5)
    job = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "* * * * *"}))["job_id"]
    sqlite_node.service.stop()
    boundary = (int(time.time()) // 60 + 1) * 60
    try:
        while time.time() < boundary + 2:
            time.sleep(0.5)
    finally:
        sqlite_node.service.process.start()
        sqlite_node.service.wait_ready()
    try:
        schedule = next(s for s in api.ok(api.get("/schedules")) if s["id"] == job)
        catch_up = [t for t in schedule["ticks"] if (t["reason"] or "").startswith("catch-up")]
        assert len(catch_up) == 1 and catch_up[0]["outcome"] == "fired", schedule["ticks"]
        due = datetime.fromisoformat(catch_up[0]["due_at"])
        assert due == datetime.fromtimestamp(boundary, UTC)
        run = api.ok(api.get(f"/runs/{catch_up[0]['run_id']}"))
        assert datetime.fromisoformat(run["tick_at"]) == due and run["trigger"] == "cron"
    finally:
        api.ok(api.delete(f"/jobs/{pipeline}"))


def _status(api: Api, run_id: str) -> str:
    return str(api.ok(api.get(f"/runs/{run_id}"))["status"])


def test_overlap_replace_cancels_the_running_run_then_starts(api: Api) -> None:
    pipeline = init_pipeline(api, "sleep 300")
    first = api.run(pipeline, wait=False)["id"]
    assert poll(lambda: _status(api, first) == "running"), _status(api, first)
    assert_error(api.post("/pipeline/run", {"name": pipeline, "wait": False}), 409, "run_in_progress")
    second = api.run(pipeline, wait=False, overlap="replace")["id"]
    assert second != first and _status(api, first) == "cancelled"
    assert poll(lambda: _status(api, second) == "running"), _status(api, second)
    # A schedule with overlap replace keeps it.
    job = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "0 0 * * *", "overlap": "replace"}))
    assert job["overlap"] == "replace"
    assert api.post(f"/runs/{second}/cancel").status_code == 202
    assert poll(lambda: _status(api, second) == "cancelled"), _status(api, second)
    api.ok(api.delete(f"/jobs/{pipeline}"))
