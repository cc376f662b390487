"""Data triggers that would start each other for ever are refused when armed, naming the cycle, in
both scopes and across them (orchestrator/scheduling/trigger_cycles.py). Nothing runs here: only arming."""

from __future__ import annotations

from tests.api import Api, assert_error, unique

from .conftest import Node


def _pipeline(api: Api, tool: str, writes: str) -> str:
    name = unique("cyc")
    step = {"name": "s", "tool": tool, "output_dataset": writes, "cmd": ["true"]}
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [step]}))
    return name


def test_trigger_cycles_are_refused_naming_them(sqlite_node: Node) -> None:
    api = sqlite_node.api
    tool = unique("cyc-tool")
    api.tool(tool)
    d1, d2, d3 = (unique(f"cyc-d{i}") for i in (1, 2, 3))
    for dataset in (d1, d2, d3):
        api.local_dataset(dataset)
    a, b, c = _pipeline(api, tool, d1), _pipeline(api, tool, d2), _pipeline(api, tool, d3)
    jobs = []
    try:
        # A -> d1 -> B (instance scope), B -> d2 -> C (federation-wide): a chain, no cycle yet.
        jobs.append(api.ok(api.post("/pipeline/run", {"name": b, "trigger": {"dataset": d1}}))["job_id"])
        federation = {"name": c, "trigger": {"dataset": d2}, "scope": "federation"}
        jobs.append(api.ok(api.post("/pipeline/run", federation))["job_id"])

        # Its own output: the shortest cycle.
        own = assert_error(
            api.post("/pipeline/run", {"name": a, "trigger": {"dataset": d1}}), 400, "trigger_loop"
        )
        assert own["cycle"] == [a, d1, a] and "itself" in own["message"]
        # B's output starting A: A -> d1 -> B -> d2 -> A, in either scope.
        for scope in ("instance", "federation"):
            body = {"name": a, "trigger": {"dataset": d2}, "scope": scope}
            two = assert_error(api.post("/pipeline/run", body), 400, "trigger_loop")
            assert two["cycle"] == [a, d1, b, d2, a], two
            assert f"{a} -> {d1} -> {b} -> {d2} -> {a}" in two["message"]
        # C's output starting A closes the longer one, through the federation-wide trigger.
        three = assert_error(
            api.post("/pipeline/run", {"name": a, "trigger": {"dataset": d3}}), 400, "trigger_loop"
        )
        assert three["cycle"] == [a, d1, b, d2, c, d3, a], three
        assert not [j for j in api.ok(api.get("/jobs")) if j not in jobs and j in _armed_on(api, a)]

        # Once the chain is broken, the same trigger arms.
        assert api.delete(f"/jobs/{jobs.pop()}").status_code == 200
        jobs.append(api.ok(api.post("/pipeline/run", {"name": a, "trigger": {"dataset": d3}}))["job_id"])
    finally:
        for job in jobs:
            api.delete(f"/jobs/{job}")


def _armed_on(api: Api, pipeline: str) -> set[str]:
    return {s["id"] for s in api.ok(api.get("/schedules")) if s["pipeline"] == pipeline}
