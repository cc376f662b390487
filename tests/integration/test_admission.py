"""Admission end to end (real executor, Docker, git, etcd): an instance with MAO_MAX_ACTIVE_RUNS=2 and a
one-slot pool runs four runs never more than two at once, starts queued runs by priority, cancels a
queued run without starting it, keeps queued runs (a backfill's too) across a restart, overlap
``queue`` keeps one waiting run per pipeline and records later advances as skipped, and overlap
``allow`` runs beside a busy pipeline yet waits for the instance's limit (also after a restart)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import servers
from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl
from tests.gitutil import git
from tests.integration.conftest import Node, orchestrator_env

APP = "/usr/src/app"
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited(
    request: pytest.FixtureRequest, servers_tmp: Path, etcd, executor, busybox_image
) -> Iterator[Node]:
    """An instance that runs at most two runs at once, with pools ``solo`` (one slot) and ``pair``;
    once per database backend."""
    name = unique(f"node-limited-{request.param}")
    data_dir = servers_tmp / name
    extra = {"MAO_MAX_ACTIVE_RUNS": "2", "MAO_POOLS": "solo=1,pair=2"}
    if request.param == "postgres":
        extra["MAO_DATABASE_URL"] = request.getfixturevalue("postgres").create_database(
            f"adm_{uuid.uuid4().hex[:8]}"
        )
    env = orchestrator_env(name, data_dir, etcd.endpoint, executor, **extra)
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    yield node
    node.service.stop()


def poll(check: Callable[[], Any], timeout: float = 120.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def pipeline(api: Api, script: str, pool: str | None = None) -> str:
    tool, out, name = unique("tool"), unique("out"), unique("adm")
    api.tool(tool)
    api.local_dataset(out)
    step: dict[str, Any] = {"name": "s", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", script]}
    if pool:
        step["pool"] = pool
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [step]}))
    return name


def status(api: Api, run_id: str) -> str:
    return str(api.ok(api.get(f"/runs/{run_id}"))["status"])


def start(api: Api, name: str, **extra: Any) -> dict[str, Any]:
    response = api.post("/pipeline/run", {"name": name, "wait": False, **extra})
    assert response.status_code == 202, response.text
    return dict(response.json())


def ended(api: Api, run_ids: list[str], timeout: float = 180) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        runs = [api.ok(api.get(f"/runs/{r}")) for r in run_ids]
        return runs if all(r["status"] in ENDED for r in runs) else None

    return list(poll(check, timeout, f"runs {run_ids} to end"))


def queue_ids(api: Api) -> list[str]:
    return [e["id"] for e in api.ok(api.get("/queue"))]


def most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The largest number of [start, end] intervals holding at one instant (an end before a start)."""
    events = sorted(
        [(datetime.fromisoformat(s), 1) for s, _ in intervals]
        + [(datetime.fromisoformat(e), -1) for _, e in intervals]
    )
    peak = now = 0
    for _, change in events:
        now += change
        peak = max(peak, now)
    return peak


def queue_depth(api: Api) -> float:
    text = api.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("mao_queue_depth "))
    return float(line.split()[1])


def test_four_runs_two_slots_never_more_than_two_running(limited: Node) -> None:
    api = limited.api
    names = [pipeline(api, f"sleep 3; echo {i} > {APP}/data/n.txt") for i in range(4)]
    answers = [start(api, name) for name in names]
    assert [a["status"] for a in answers] == ["pending", "pending", "queued", "queued"]
    waiting = api.ok(api.get("/queue"))
    assert [(e["position"], e["id"], e["pipeline"]) for e in waiting] == [
        (1, answers[2]["id"], names[2]),
        (2, answers[3]["id"], names[3]),
    ]
    assert all("MAO_MAX_ACTIVE_RUNS=2" in e["waiting_for"] and e["trigger"] == "manual" for e in waiting)
    listed = {r["id"]: r["status"] for r in api.ok(api.get("/runs", status="queued"))}
    assert {answers[2]["id"], answers[3]["id"]} <= set(listed)
    assert queue_depth(api) == 2
    runs = ended(api, [a["id"] for a in answers])
    assert [r["status"] for r in runs] == ["succeeded"] * 4, runs
    assert most_at_once([(r["started_at"], r["ended_at"]) for r in runs]) == 2
    assert queue_ids(api) == [] and queue_depth(api) == 0


def test_priority_order_and_cancelling_a_queued_run(limited: Node) -> None:
    api = limited.api
    blockers = [start(api, pipeline(api, "sleep 300"))["id"] for _ in range(2)]
    poll(lambda: all(status(api, b) == "running" for b in blockers), what="the blockers to run")
    low = start(api, pipeline(api, "sleep 300"))["id"]
    # As the operator would: maoctl pipeline run --priority, maoctl pipeline queue.
    queued = maoctl(
        api.url, "pipeline", "run", "--name", pipeline(api, "sleep 300"), "--no-wait", "--priority", "5"
    )
    assert queued.exit_code == 0 and "Queued run" in queued.output, queued.output
    high = queued.output.split("Queued run ")[1].split()[0]
    mid = start(api, pipeline(api, "sleep 300"), priority=1)["id"]
    listing = api.ok(api.get("/queue"))
    assert [(e["id"], e["priority"], e["position"]) for e in listing] == [
        (high, 5, 1),
        (mid, 1, 2),
        (low, 0, 3),
    ]
    shown = maoctl(api.url, "pipeline", "queue", "--json")
    assert [e["id"] for e in json.loads(shown.output)] == [high, mid, low]
    assert api.ok(api.get(f"/runs/{high}"))["priority"] == 5
    try:
        assert api.post(f"/runs/{blockers[0]}/cancel").status_code == 202
        poll(lambda: status(api, high) == "running", what="the highest priority to start")
        assert status(api, mid) == "queued" and status(api, low) == "queued"
        # A queued run is cancelled without starting (maoctl as the operator would).
        result = maoctl(api.url, "pipeline", "cancel", "--id", low)
        assert result.exit_code == 0, result.output
        run = api.ok(api.get(f"/runs/{low}"))
        assert run["status"] == "cancelled" and run["started_at"] is None and run["ended_at"], run
        assert [(s["status"], s["attempts"]) for s in run["steps"]] == [("cancelled", [])]
        assert "queued" in run["error"]
        assert_error(api.post(f"/runs/{low}/cancel"), 409, "run_ended")
        assert queue_ids(api) == [mid]
        assert api.post(f"/runs/{blockers[1]}/cancel").status_code == 202
        poll(lambda: status(api, mid) == "running", what="the next priority to start")
        assert queue_ids(api) == []
    finally:
        for run_id in (*blockers, high, mid, low):
            api.post(f"/runs/{run_id}/cancel")
    assert [r["status"] for r in ended(api, [high, mid])] == ["cancelled", "cancelled"]


def test_a_pool_of_one_slot_runs_its_steps_one_at_a_time(limited: Node) -> None:
    api = limited.api
    names = [pipeline(api, "sleep 2", pool="solo") for _ in range(2)]
    ids = [start(api, name)["id"] for name in names]
    runs = ended(api, ids)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], runs
    steps = [r["steps"][0] for r in runs]
    assert most_at_once([(s["started_at"], s["ended_at"]) for s in steps]) == 1
    # Both runs were running (the instance has room for two): one step waited for the slot.
    assert most_at_once([(r["started_at"], r["ended_at"]) for r in runs]) == 2
    tool, out = unique("tool"), unique("out")
    api.tool(tool)
    api.local_dataset(out)
    body = {"name": unique("p"), "steps": [{"name": "s", "tool": tool, "output_dataset": out, "pool": "gpu"}]}
    error = assert_error(api.post("/pipeline/init", body), 400, "unknown_pool")
    assert "gpu" in error["message"] and "solo" in error["message"]


def gated_pipeline(node: Node) -> tuple[str, Path]:
    """A one-step pipeline whose tool runs until a file ``go`` appears in its output folder; (its
    name, the file that lets it finish)."""
    tool, out, name = unique("tool"), unique("out"), unique("adm")
    node.api.tool(tool)
    node.api.local_dataset(out)
    script = f"while [ ! -e {APP}/data/go ]; do sleep 0.1; done; rm {APP}/data/go"
    step = {"name": "s", "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", script]}
    node.api.ok(node.api.post("/pipeline/init", {"name": name, "steps": [step]}))
    return name, node.data_dir / "work" / out / f"s-{node.name}" / "go"


def containers_of(run_id: str) -> list[str]:
    client = docker.from_env()
    try:
        found = client.containers.list(ignore_removed=True, filters={"label": f"mao.run={run_id}"})
        return [c.name for c in found]
    finally:
        client.close()


def test_queued_runs_and_a_backfill_survive_a_restart(limited: Node) -> None:
    api = limited.api
    gated = [gated_pipeline(limited) for _ in range(2)]
    blockers = [start(api, name)["id"] for name, _ in gated]
    poll(lambda: all(containers_of(b) for b in blockers), what="the blockers' containers")
    queued = [start(api, pipeline(api, f"echo {i} > {APP}/data/q.txt"), priority=i)["id"] for i in range(2)]
    ticked = pipeline(api, f"date > {APP}/data/t.txt")
    span = {"name": ticked, "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z", "cron": "0 * * * *"}
    response = api.post("/pipeline/backfill", span)
    assert response.status_code == 202, response.text
    backfill = response.json()
    assert backfill["status"] == "queued" and len(backfill["runs"]) == 3
    assert set(queue_ids(api)) == {*queued, *backfill["runs"]}
    limited.service.stop()
    limited.service.process.start()
    limited.service.wait_ready()
    # The blockers' containers outlived the stop: they are adopted and hold the instance's two
    # places again, so the queue waits on until they end; then the queued runs run, the backfill
    # in tick order.
    assert [status(api, b) for b in blockers] == ["running", "running"]
    assert set(queue_ids(api)) == {*queued, *backfill["runs"]}
    for _, go in gated:
        go.touch()
    finished = ended(api, blockers)
    assert [(r["status"], len(r["steps"][0]["attempts"])) for r in finished] == [("succeeded", 1)] * 2
    runs = ended(api, [*queued, *backfill["runs"]])
    assert [r["status"] for r in runs] == ["succeeded"] * 5, runs
    ticks = runs[2:]
    assert [r["tick_at"] for r in ticks] == [f"2026-01-01T0{h}:00:00+00:00" for h in range(3)]
    assert all(r["trigger"] == "backfill" for r in ticks)
    for earlier, later in zip(ticks, ticks[1:], strict=False):
        assert later["started_at"] >= earlier["ended_at"]  # one at a time, in order
    assert queue_ids(api) == []


def test_overlap_queue_keeps_one_waiting_run_and_skips_later_ones(limited: Node) -> None:
    api = limited.api
    upstream_data, downstream_data = unique("up"), unique("down")
    tool = unique("tool")
    api.tool(tool)
    api.local_dataset(upstream_data)
    api.local_dataset(downstream_data)
    upstream, downstream = unique("producer"), unique("consumer")
    make = {"name": "make", "tool": tool, "output_dataset": upstream_data, "cmd": ["sh", "-c", f"echo $MAO_RUN_ID > {APP}/data/now"]}  # fmt: skip
    use = {"name": "use", "tool": tool, "input_dataset": upstream_data, "output_dataset": downstream_data, "cmd": ["sh", "-c", f"sleep 6; cp {APP}/input/now {APP}/data/seen"]}  # fmt: skip
    api.ok(api.post("/pipeline/init", {"name": upstream, "steps": [make]}))
    api.ok(api.post("/pipeline/init", {"name": downstream, "steps": [use]}))
    job = api.ok(
        api.post(
            "/pipeline/run", {"name": downstream, "trigger": {"dataset": upstream_data}, "overlap": "queue"}
        )
    )["job_id"]

    def downstream_runs() -> list[dict[str, Any]]:
        return list(reversed(api.ok(api.get("/runs", pipeline=downstream, limit=100))))

    def ticks() -> list[dict[str, Any]]:
        schedule = next(s for s in api.ok(api.get("/schedules")) if s["id"] == job)
        return list(reversed(schedule["ticks"]))

    try:
        for advance in range(3):
            assert api.run(upstream)["status"] == "succeeded"
            poll(lambda n=advance: len(ticks()) == n + 1, what=f"advance {advance + 1} to be recorded")
        outcomes = ticks()
        assert [t["outcome"] for t in outcomes] == ["fired", "fired", "skipped"], outcomes
        first, second = outcomes[0]["run_id"], outcomes[1]["run_id"]
        assert f"queued behind run {first}" in outcomes[1]["reason"]
        assert "at most one waiting run" in outcomes[2]["reason"] and second in outcomes[2]["reason"]
        runs = ended(api, [first, second])
        assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
        assert runs[1]["started_at"] >= runs[0]["ended_at"]
        assert len(downstream_runs()) == 2
        # A manual run with overlap queue: one waits, the next is a 409.
        running = start(api, downstream)["id"]
        waiting = start(api, downstream, overlap="queue")
        assert waiting["status"] == "queued"
        assert_error(api.post("/pipeline/run", {"name": downstream, "wait": False, "overlap": "queue"}), 409, "run_in_progress")  # fmt: skip
        assert_error(api.post("/pipeline/run", {"name": downstream, "wait": False}), 409, "run_in_progress")
        assert [r["status"] for r in ended(api, [running, waiting["id"]])] == ["succeeded", "succeeded"]
    finally:
        api.ok(api.delete(f"/jobs/{job}"))


def test_overlap_allow_is_exempt_from_a_busy_pipeline_not_from_the_limit(limited: Node) -> None:
    api = limited.api
    tool, data, name = unique("tool"), unique("side"), unique("allow")
    api.tool(tool)
    master = api.local_dataset(data)
    write = f"sleep 6; echo $MAO_RUN_ID > {APP}/data/$MAO_RUN_ID.txt"  # a file per run: no clash
    step = {"name": "s", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", write]}
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [step]}))
    first = start(api, name)
    assert first["status"] == "pending"
    # Started at once: its record says running from its first write (no pending -> running write).
    recorded = api.ok(api.get(f"/runs/{first['id']}"))
    assert recorded["status"] == "running" and recorded["started_at"], recorded
    beside = start(api, name, overlap="allow")  # the pipeline is busy, the instance has room
    assert beside["status"] == "pending"
    poll(lambda: all(status(api, r["id"]) == "running" for r in (first, beside)), what="both to run")
    third = start(api, name, overlap="allow")  # the instance is full (MAO_MAX_ACTIVE_RUNS=2): it waits
    assert third["status"] == "queued"
    (entry,) = api.ok(api.get("/queue"))
    assert entry["id"] == third["id"] and "MAO_MAX_ACTIVE_RUNS=2" in entry["waiting_for"], entry
    # Without allow the pipeline is busy: 409, as ever.
    assert_error(api.post("/pipeline/run", {"name": name, "wait": False}), 409, "run_in_progress")
    runs = ended(api, [first["id"], beside["id"], third["id"]])
    assert [r["status"] for r in runs] == ["succeeded"] * 3, runs
    assert most_at_once([(r["started_at"], r["ended_at"]) for r in runs]) == 2
    assert runs[2]["started_at"] >= min(runs[0]["ended_at"], runs[1]["ended_at"])
    files = git(master, "ls-tree", "-r", "--name-only", "ground-truth").split()
    assert {f"{r['id']}.txt" for r in runs} <= set(files), files

    # Queued behind a full instance, two allow runs of one pipeline keep their exemption across a
    # restart: once re-admitted, they run side by side, not one after the other.
    gated = [gated_pipeline(limited) for _ in range(2)]
    blockers = [start(api, blocker)["id"] for blocker, _ in gated]
    poll(lambda: all(containers_of(b) for b in blockers), what="the blockers' containers")
    waiting = [start(api, name, overlap="allow") for _ in range(2)]
    assert [w["status"] for w in waiting] == ["queued", "queued"]
    limited.service.stop()
    limited.service.process.start()
    limited.service.wait_ready()
    # The blockers are adopted and hold the instance's places until they end.
    assert [status(api, b) for b in blockers] == ["running", "running"]
    for _, go in gated:
        go.touch()
    runs = ended(api, [w["id"] for w in waiting])
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], runs
    assert most_at_once([(r["started_at"], r["ended_at"]) for r in runs]) == 2, runs
    assert queue_ids(api) == []
