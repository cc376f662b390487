"""The read-only routes behind the console's pictures, through the API of real orchestrators (SQLite
and PostgreSQL): ``GET /runs/grid``, ``GET /runs?trigger=``, ``GET /lineage``, ``?next=N`` on the
schedule listings; and the grid's query over generated histories on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings

from tests.api import Api, assert_error, unique
from tests.grid_cases import Case, GridChecker, cases
from tests.integration.conftest import Node

APP = "/usr/src/app"


def pipeline(api: Api, steps: list[tuple[str, str]]) -> str:
    """A pipeline of steps (name, shell command), each writing its own new dataset, in a line."""
    tool, name = unique("tool"), unique("grid")
    api.tool(tool)
    body = []
    for step, cmd in steps:
        out = unique("out")
        api.local_dataset(out)
        body.append({"name": step, "tool": tool, "output_dataset": out, "cmd": ["sh", "-c", cmd]})
    api.ok(api.post("/pipeline/init", {"name": name, "steps": body}))
    return name


def test_the_grid_answers_each_pipelines_last_runs(node: Node) -> None:
    api = node.api
    good = pipeline(api, [("only", "true")])
    bad = pipeline(api, [("first", "echo x > /usr/src/app/data/x"), ("second", "exit 3")])
    good_runs = [api.run(good)["id"] for _ in range(3)]
    bad_runs = [api.run(bad)["id"] for _ in range(2)]

    grid = api.ok(api.get("/runs/grid", pipelines=f"{bad},{good}", last=2))
    assert grid["last"] == 2
    assert [row["pipeline"] for row in grid["pipelines"]] == [bad, good]  # the order asked for
    bad_row, good_row = grid["pipelines"]
    assert [r["id"] for r in good_row["runs"]] == good_runs[::-1][:2]  # newest first
    assert [r["id"] for r in bad_row["runs"]] == bad_runs[::-1]
    assert good_row["defined"] and good_row["steps"] == ["only"] and bad_row["steps"] == ["first", "second"]
    for run in good_row["runs"]:
        assert run["status"] == "succeeded" and run["trigger"] == "manual"
        assert [(s["name"], s["status"], s["attempts"], s["retried"]) for s in run["steps"]] == [
            ("only", "succeeded", 1, False)
        ]
        assert run["duration"] > 0 and run["queued"] >= 0 and run["steps"][0]["duration"] > 0
    for run in bad_row["runs"]:
        assert run["status"] == "failed"
        assert [(s["name"], s["status"]) for s in run["steps"]] == [
            ("first", "succeeded"),
            ("second", "failed"),
        ]

    # Filters: state and trigger, before "last N".
    failed = api.ok(api.get("/runs/grid", pipelines=f"{good},{bad}", status="failed"))["pipelines"]
    assert [len(row["runs"]) for row in failed] == [0, 2]
    assert all(
        not row["runs"]
        for row in api.ok(api.get("/runs/grid", pipelines=good, trigger="backfill"))["pipelines"]
    )
    assert (
        len(api.ok(api.get("/runs/grid", pipelines=good, trigger="manual", last=10))["pipelines"][0]["runs"])
        == 3
    )
    # Every pipeline of the instance by default, by name; a name without runs or definition is an empty row.
    every = [row["pipeline"] for row in api.ok(api.get("/runs/grid", last=1))["pipelines"]]
    assert {good, bad} <= set(every) and every == sorted(every)
    ghost = api.ok(api.get("/runs/grid", pipelines="no-such-pipeline"))["pipelines"]
    assert ghost == [{"pipeline": "no-such-pipeline", "defined": False, "steps": [], "runs": []}]

    # GET /runs filters by trigger too (the backfills page asks for trigger=backfill).
    assert [r["id"] for r in api.ok(api.get("/runs", pipeline=good, trigger="manual"))] == good_runs[::-1]
    assert api.ok(api.get("/runs", pipeline=good, trigger="backfill")) == []


@pytest.mark.parametrize(
    "query, code",
    [
        ({"last": 0}, "invalid_request"),
        ({"last": 101}, "invalid_request"),
        ({"last": "many"}, "invalid_request"),
        ({"pipelines": "ok,../etc"}, "invalid_name"),
        ({"pipelines": ",".join(f"p{i}" for i in range(101))}, "invalid_request"),
        ({"pipelines": "a,,b"}, "invalid_name"),
        ({"status": "sleeping"}, "invalid_request"),
        ({"trigger": "Cron!"}, "invalid_request"),
    ],
)
def test_bad_grid_queries_are_400(api: Api, query: dict[str, Any], code: str) -> None:
    assert_error(api.get("/runs/grid", **query), 400, code)


def test_the_picture_routes_need_the_token(node: Node) -> None:
    anonymous = Api(node.service.url, "")
    for path in ("/runs/grid", "/lineage", "/schedules?next=2", "/federation/schedules?next=2"):
        assert_error(anonymous.get(path), 401, "unauthorized")
    assert_error(node.api.get("/runs?trigger=x-y"), 400, "invalid_request")
    assert_error(node.api.get("/runs/grid/x"), 404)


@pytest.fixture
def federation_job(api: Api) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for job in made:
        api.delete(f"/jobs/{job}")


def test_lineage_draws_reads_writes_triggers_and_tools(node: Node, federation_job: list[str]) -> None:
    api = node.api
    tool, spare = unique("tool"), unique("spare")
    api.tool(tool)
    api.tool(spare, image="localhost:5000/lab/spare:1")
    raw, clean, report = unique("raw"), unique("clean"), unique("report")
    for dataset in (raw, clean, report):
        api.local_dataset(dataset)
    ingest, summary = unique("ingest"), unique("summary")
    steps = [
        {"name": "collect", "tool": tool, "output_dataset": raw},
        {"name": "tidy", "tool": tool, "input_dataset": raw, "output_dataset": clean, "fallback_tool": spare},
    ]
    api.ok(api.post("/pipeline/init", {"name": ingest, "steps": steps}))
    step = {"name": "sum", "tool": tool, "input_dataset": clean, "output_dataset": report}
    api.ok(api.post("/pipeline/init", {"name": summary, "steps": [step]}))
    trigger = api.ok(api.post("/pipeline/run", {"name": summary, "trigger": {"dataset": clean}}))["job_id"]
    scheduled = {"name": ingest, "cron": "0 4 1 1 *", "scope": "federation"}
    federation_job.append(api.ok(api.post("/pipeline/run", scheduled))["job_id"])

    graph = api.ok(api.get("/lineage"))
    assert graph["etcd"] == "ok"
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"])
    for dataset in (raw, clean, report):
        assert nodes[f"dataset:{dataset}"]["registered"] is True and nodes[f"dataset:{dataset}"]["here"]
    first, second = nodes[f"pipeline:{ingest}"], nodes[f"pipeline:{summary}"]
    assert first["federation"] and not second["federation"]
    assert first["here"] and first["instances"] == [node.name] and second["instances"] == [node.name]
    mine = {
        (e["source"], e["target"], e["kind"], e["scope"]): e["steps"] or e["triggers"]
        for e in graph["edges"]
        if {e["source"], e["target"]} & {f"pipeline:{ingest}", f"pipeline:{summary}"}
    }
    assert mine == {
        (f"pipeline:{ingest}", f"dataset:{raw}", "writes", None): ["collect"],
        (f"dataset:{raw}", f"pipeline:{ingest}", "reads", None): ["tidy"],
        (f"pipeline:{ingest}", f"dataset:{clean}", "writes", None): ["tidy"],
        (f"dataset:{clean}", f"pipeline:{summary}", "reads", None): ["sum"],
        (f"pipeline:{summary}", f"dataset:{report}", "writes", None): ["sum"],
        (f"dataset:{clean}", f"pipeline:{summary}", "triggers", "instance"): [trigger],
    }
    ids = set(nodes)
    assert all(e["source"] in ids and e["target"] in ids for e in graph["edges"])
    tools = {t["name"]: t for t in graph["tools"]}
    assert (
        tools[tool]["registered"]
        and tools[tool]["image"] == "busybox:latest"
        and tools[tool]["author"] == "tests"
    )
    assert {(u["pipeline"], u["step"], u["role"]) for u in tools[tool]["used_by"]} == {
        (ingest, "collect", "tool"),
        (ingest, "tidy", "tool"),
        (summary, "sum", "tool"),
    }
    assert [(u["pipeline"], u["step"], u["role"]) for u in tools[spare]["used_by"]] == [
        (ingest, "tidy", "fallback")
    ]
    assert tools[spare]["image"] == "localhost:5000/lab/spare:1"


def test_schedule_listings_give_the_next_ticks(node: Node, federation_job: list[str]) -> None:
    api = node.api
    name = pipeline(api, [("only", "true")])
    local = api.ok(api.post("/pipeline/run", {"name": name, "cron": "0 3 * * *", "timezone": "UTC"}))[
        "job_id"
    ]
    federation_job.append(
        api.ok(api.post("/pipeline/run", {"name": name, "cron": "30 6 * * MON", "scope": "federation"}))[
            "job_id"
        ]
    )
    try:
        listed = {s["id"]: s for s in api.ok(api.get("/schedules", next=3))}
        ticks = [datetime.fromisoformat(t) for t in listed[local]["next_ticks"]]
        assert len(ticks) == 3 and all((t.hour, t.minute) == (3, 0) for t in ticks)
        assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [timedelta(days=1)] * 2
        assert ticks[0] == datetime.fromisoformat(listed[local]["next_run_time"])
        assert "next_ticks" not in api.ok(api.get("/schedules"))[0]  # only when asked
        federation = {s["id"]: s for s in api.ok(api.get("/federation/schedules", next=2))}
        weekly = [datetime.fromisoformat(t) for t in federation[federation_job[0]]["next_ticks"]]
        assert len(weekly) == 2 and weekly[1] - weekly[0] == timedelta(days=7) and weekly[0].weekday() == 0
        assert_error(api.get("/schedules", next=21), 400, "invalid_request")
        assert_error(api.get("/federation/schedules", next=-1), 400, "invalid_request")
    finally:
        api.delete(f"/jobs/{local}")


@pytest.fixture(scope="module")
def postgres_grid(module_database_url: str) -> Iterator[GridChecker]:
    checker = GridChecker(module_database_url)
    yield checker
    checker.close()


@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_grid_query_on_postgres_matches_a_naive_computation(postgres_grid: GridChecker, case: Case) -> None:
    postgres_grid.check(case)
