"""Federation-wide schedules through the API: validation, every instance in step, and real minute
ticks fired exactly once and failing over when the instance that fired is killed (about 2 minutes)."""

from __future__ import annotations

import time

import pytest

from tests import servers
from tests.api import Api, assert_error, unique

from .conftest import Federation


def init(federation: Federation, names: list[str], script: str = "date > /usr/src/app/data/now") -> str:
    tool, data, pipeline = unique("tool"), unique("data"), unique("fedcron")
    federation.a.api.tool(tool)
    federation.a.api.local_dataset(data)
    step = {"name": "tick", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", script]}
    for name in names:
        api = federation.nodes[name].api
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    return pipeline


def schedule(api: Api, pipeline: str, cron: str = "* * * * *", **extra: object) -> dict:
    return api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": cron, "scope": "federation", **extra}))


def federation_schedule(api: Api, job_id: str) -> dict | None:
    return next((s for s in api.ok(api.get("/federation/schedules")) if s["id"] == job_id), None)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"scope": "galaxy", "cron": "* * * * *"}, 400, "invalid_scope"),
        ({"scope": "federation"}, 400, "invalid_cron"),
        ({"scope": "federation", "cron": "61 * * * *"}, 400, "invalid_cron"),
        ({"scope": "federation", "cron": "* * * * *", "timezone": "Mars/Base"}, 400, "invalid_timezone"),
        ({"scope": "federation", "cron": "* * * * *", "placement": ["role"]}, 400, "invalid_placement"),
        (
            {"scope": "federation", "cron": "* * * * *", "placement": {"labels": {"a": 1}}},
            400,
            "invalid_placement",
        ),
        ({"cron": "* * * * *", "placement": {"labels": {"role": "x"}}}, 400, "invalid_placement"),
        ({"scope": "federation", "cron": "* * * * *"}, 404, None),  # not registered anywhere
    ],
)
def test_invalid_federation_schedules(
    federation: Federation, body: dict, status: int, code: str | None
) -> None:
    assert_error(federation.a.api.post("/pipeline/run", {"name": unique("nope"), **body}), status, code)


def test_every_instance_arms_a_federation_schedule_and_any_can_delete_it(federation: Federation) -> None:
    pipeline = init(federation, ["fed-a"])
    job = schedule(
        federation.a.api, pipeline, "0 3 1 1 *", timezone="Europe/Zurich", placement={"labels": {"site": "b"}}
    )
    assert job["scope"] == "federation" and job["placement"] == {"labels": {"site": "b"}}
    created = time.monotonic()
    for api in federation.apis():
        servers.wait_until(
            lambda api=api: job["job_id"] in api.ok(api.get("/jobs")), timeout=30, what="armed"
        )
    print(
        f"\nfederation schedule armed on all three instances {time.monotonic() - created:.3f} s after creation"
    )
    listed = federation_schedule(federation.c.api, job["job_id"])
    assert listed is not None and listed["pipeline"] == pipeline and listed["cron"] == "0 3 1 1 *"
    assert listed["timezone"] == "Europe/Zurich" and listed["placement"] == {"labels": {"site": "b"}}
    assert listed["ticks"] == [] and listed["next_run_time"].startswith("20")
    # Not among this instance's own schedules, but deletable through /jobs from any instance.
    assert job["job_id"] not in [s["id"] for s in federation.c.api.ok(federation.c.api.get("/schedules"))]
    assert federation.c.api.ok(federation.c.api.delete(f"/jobs/{job['job_id']}"))["scope"] == "federation"
    for api in federation.apis():
        servers.wait_until(
            lambda api=api: job["job_id"] not in api.ok(api.get("/jobs")), timeout=30, what="gone"
        )
    assert_error(federation.b.api.delete(f"/jobs/{job['job_id']}"), 404)


def wait_for_tick(
    api: Api, job_id: str, count: int, settled: bool = True, timeout: float = 100
) -> list[dict]:
    """The schedule's ticks once ``count`` are recorded (and the newest run's end, with ``settled``)."""

    def ready() -> list[dict] | None:
        ticks = (federation_schedule(api, job_id) or {}).get("ticks", [])
        decided = [t for t in ticks if t["outcome"] != "claimed"]
        if len(decided) < count or (
            settled and decided[0]["outcome"] == "fired" and not decided[0].get("run_status")
        ):
            return None
        return decided

    return servers.wait_until(ready, timeout=timeout, interval=0.5, what=f"{count} tick(s) of {job_id}")


def runs_of(federation: Federation, job_id: str) -> dict[str, list[dict]]:
    return {
        name: [r for r in node.api.ok(node.api.get("/runs", limit=1000)) if r["schedule_id"] == job_id]
        for name, node in federation.nodes.items()
        if node.service.alive
    }


def test_a_minute_schedule_fires_once_per_tick_and_fails_over(federation: Federation) -> None:
    """Waits for two minute boundaries (at most about 2 minutes)."""
    central = ["fed-a", "fed-b"]
    # fed-c has the pipeline too, but its labels (role=edge) keep it out of the placement.
    pipeline = init(federation, ["fed-a", "fed-b", "fed-c"])
    # Its priority travels with the record to whichever instance wins a tick (that one's queue order).
    scheduled = schedule(federation.c.api, pipeline, placement={"labels": {"role": "central"}}, priority=7)
    assert scheduled["priority"] == 7
    job = scheduled["job_id"]
    # A second schedule whose pipeline is then deleted everywhere: its ticks are skipped, saying why.
    orphan = init(federation, ["fed-b"])
    orphan_job = schedule(federation.b.api, orphan)["job_id"]
    federation.b.api.ok(federation.b.api.delete(f"/pipeline/{orphan}"))
    try:
        first = wait_for_tick(federation.c.api, job, 1)[0]
        winner = first["instance"]
        assert first["outcome"] == "fired" and winner in central and first["run_status"] == "succeeded", first
        runs = runs_of(federation, job)
        assert [r["id"] for r in runs[winner]] == [first["run_id"]]
        assert runs[winner][0]["priority"] == 7
        assert federation_schedule(federation.a.api, job)["priority"] == 7  # type: ignore[index]
        assert sum(len(found) for found in runs.values()) == 1  # fired once, federation-wide

        federation.nodes[winner].service.kill()
        second = wait_for_tick(federation.c.api, job, 2)[0]
        other = next(name for name in central if name != winner)
        assert second["outcome"] == "fired" and second["instance"] == other, second
        assert [r["id"] for r in runs_of(federation, job)[other]] == [second["run_id"]]
        assert runs_of(federation, job)["fed-c"] == []

        orphan_ticks = wait_for_tick(federation.c.api, orphan_job, 1)
        assert all(t["outcome"] == "skipped" for t in orphan_ticks)
        assert f"pipeline {orphan} is not initialised on any eligible instance" in [
            t["reason"] for t in orphan_ticks
        ]
    finally:
        for node in federation.nodes.values():
            if not node.service.alive:
                node.service.process.start()
                node.service.wait_ready()
        for job_id in (job, orphan_job):
            federation.a.api.delete(f"/jobs/{job_id}")
    winner_runs = runs_of(federation, job)[winner]
    assert [r["id"] for r in winner_runs] == [first["run_id"]]  # the restarted instance ran nothing more
