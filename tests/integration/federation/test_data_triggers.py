"""A federation-wide data trigger: exactly one of three instances fires per upstream merge."""

from __future__ import annotations

import time

from tests.api import Api, assert_error, unique

from .conftest import Federation

APP = "/usr/src/app"


def _downstream_runs(federation: Federation, pipeline: str) -> list[dict]:
    runs = []
    for name, node in federation.nodes.items():
        for run in node.api.ok(node.api.get("/runs", pipeline=pipeline, limit=100)):
            runs.append({**run, "instance": name})
    return runs


def _init(api: Api, name: str, step: dict) -> None:
    api.ok(api.post("/pipeline/init", {"name": name, "steps": [step]}))


def test_exactly_one_instance_fires_per_upstream_merge(federation: Federation) -> None:
    a = federation.a.api
    tool, up_data, down_data = unique("tool"), unique("up"), unique("down")
    upstream, downstream = unique("producer"), unique("consumer")
    a.tool(tool)
    a.local_dataset(up_data)
    a.local_dataset(down_data)
    _init(
        a,
        upstream,
        {
            "name": "make",
            "tool": tool,
            "output_dataset": up_data,
            "cmd": ["sh", "-c", f"echo $MAO_RUN_ID > {APP}/data/now"],
        },
    )
    consume = {
        "name": "use",
        "tool": tool,
        "input_dataset": up_data,
        "output_dataset": down_data,
        # Each instance writes its own file: no conflicts between instances' votes.
        "cmd": ["sh", "-c", f"cp {APP}/input/now {APP}/data/seen-$MAO_INSTANCE"],
    }
    for api in federation.apis():
        _init(api, downstream, consume)
    body = {"name": downstream, "trigger": {"dataset": up_data}, "scope": "federation", "priority": 3}
    assert_error(
        federation.b.api.post("/pipeline/run", {**body, "trigger": {"dataset": down_data}}),
        400,
        "trigger_loop",
    )
    job = federation.b.api.ok(federation.b.api.post("/pipeline/run", body))
    listed = next(
        s
        for s in federation.c.api.ok(federation.c.api.get("/federation/schedules"))
        if s["id"] == job["job_id"]
    )
    assert listed["trigger"] == {"dataset": up_data}
    time.sleep(1.0)  # every instance's watch of the triggers has it (milliseconds, in practice)
    merges = []
    try:
        for _ in range(3):
            run = a.run(upstream)
            assert run["status"] == "succeeded", run
            merges.append(run["steps"][0]["merge_commit"])
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                runs = _downstream_runs(federation, downstream)
                if len(runs) >= len(merges) and all(r["status"] in ("succeeded", "failed") for r in runs):
                    break
                time.sleep(0.3)
        time.sleep(2.0)  # a second instance firing the same advance would show by now
        runs = _downstream_runs(federation, downstream)
        assert sorted(r["trigger_commit"] for r in runs) == sorted(merges), runs
        assert {r["trigger"] for r in runs} == {"dataset"} and {r["status"] for r in runs} == {"succeeded"}
        assert {r["priority"] for r in runs} == {3}  # the trigger's, on whichever instance fired
        fires = next(
            s
            for s in federation.a.api.ok(federation.a.api.get("/federation/schedules"))
            if s["id"] == job["job_id"]
        )["ticks"]
        assert sorted(f["commit"] for f in fires if f["outcome"] == "fired") == sorted(merges)
    finally:
        federation.c.api.ok(federation.c.api.delete(f"/jobs/{job['job_id']}"))
    a.run(upstream)
    time.sleep(2.0)
    assert len(_downstream_runs(federation, downstream)) == len(merges)  # gone everywhere
