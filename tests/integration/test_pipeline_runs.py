"""Pipelines end to end: real executor and Docker, real git remotes, real etcd, both databases."""

from __future__ import annotations

import time

from tests import gitutil
from tests.api import Api, assert_error, unique

APP = "/usr/src/app"


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def step(name: str, tool: str, output: str, cmd: list[str] | None, input_dataset: str | None = None, **extra):
    return {
        "name": name,
        "tool": tool,
        "input_dataset": input_dataset,
        "output_dataset": output,
        "env": None,
        "cmd": cmd,
        "docker_socket": False,
        **extra,
    }


def wait_for_run(api: Api, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.ok(api.get(f"/runs/{run_id}"))
        if run["status"] in ("succeeded", "failed"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end within {timeout} s")


def test_two_steps_chain_input_through_ground_truth(api: Api, node) -> None:
    tool, raw, report, pipeline = unique("tool"), unique("raw"), unique("report"), unique("chain")
    api.tool(tool)
    raw_repo, report_repo = api.local_dataset(raw), api.local_dataset(report)
    steps = [
        step("collect", tool, raw, sh(f'echo "sample $$" >> {APP}/data/samples.txt; echo collected')),
        step(
            "count",
            tool,
            report,
            sh(
                f"wc -l < {APP}/input/samples.txt > {APP}/data/count.txt; touch {APP}/input/x || echo input is read-only"
            ),
            input_dataset=raw,
        ),
    ]
    init = api.ok(api.post("/pipeline/init", {"name": pipeline, "description": "demo", "steps": steps}))
    assert init["ok"] is True and [s["name"] for s in init["steps"]] == ["collect", "count"]

    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    assert run["trigger"] == "manual" and run["started_at"] and run["ended_at"]
    collect, count = run["steps"]
    assert collect["status"] == count["status"] == "succeeded"
    assert collect["exit_code"] == 0 and collect["image_id"].startswith("sha256:")
    assert "collected" in collect["log_tail"] and "input is read-only" in count["log_tail"]
    assert collect["branch"] == f"collect-{node.name}"
    # Step 2 read exactly what step 1 had just merged into ground-truth.
    assert count["input_commit"] == collect["merge_commit"] == gitutil.tip(raw_repo, "ground-truth")
    assert gitutil.show(report_repo, "ground-truth", "count.txt").strip() == "1"

    # Provenance: the node commit carries the trailers; ground-truth merged it with a merge commit.
    trailers = gitutil.trailers(report_repo, count["output_commit"])
    assert trailers["MAO-Run"] == run["id"] and trailers["MAO-Step"] == "count"
    assert (
        trailers["MAO-Tool-Image"] == count["image_id"]
        and trailers["MAO-Input-Commit"] == count["input_commit"]
    )
    assert count["output_commit"] in gitutil.parents(report_repo, count["merge_commit"])
    assert f"count-{node.name}" in gitutil.branches(report_repo)
    assert f"collect-{node.name}" in api.ok(api.get(f"/registry/datasets/{raw}"))["nodes"]

    # A second run appends on the node branch and the count follows.
    second = api.run(pipeline)
    assert second["status"] == "succeeded"
    assert gitutil.show(report_repo, "ground-truth", "count.txt").strip() == "2"
    assert gitutil.show(raw_repo, "ground-truth", "samples.txt").count("sample") == 2

    runs = api.ok(api.get("/runs", pipeline=pipeline))
    assert [r["id"] for r in runs] == [second["id"], run["id"]]
    assert api.ok(api.get("/runs", pipeline=pipeline, status="failed")) == []
    assert len(api.ok(api.get("/runs", pipeline=pipeline, limit=1))) == 1


def test_failing_step_stops_the_run_and_pushes_nothing(api: Api, node) -> None:
    tool, data, pipeline = unique("tool"), unique("data"), unique("fails")
    api.tool(tool)
    repo = api.local_dataset(data)
    steps = [
        step("broken", tool, data, sh(f"echo partial > {APP}/data/partial.txt; echo oops >&2; exit 3")),
        step("never", tool, data, sh("true")),
    ]
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
    before = gitutil.tip(repo, "ground-truth")
    run = api.run(pipeline)
    assert run["status"] == "failed" and "exited with code 3" in run["error"]
    broken, never = run["steps"]
    assert broken["status"] == "failed" and broken["exit_code"] == 3 and "oops" in broken["log_tail"]
    assert broken["output_commit"] is None and never["status"] == "skipped"
    assert gitutil.tip(repo, "ground-truth") == before
    assert f"broken-{node.name}" not in gitutil.branches(repo)
    assert api.ok(api.get("/runs", pipeline=pipeline, status="failed"))[0]["id"] == run["id"]


def test_step_that_changes_nothing_still_succeeds(api: Api) -> None:
    tool, data, pipeline = unique("tool"), unique("data"), unique("noop")
    api.tool(tool)
    api.local_dataset(data)
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step("noop", tool, data, sh("true"))]}))
    for _ in range(2):
        run = api.run(pipeline)
        assert run["status"] == "succeeded", run
    assert run["steps"][0]["changed"] is False


def test_timeout_missing_image_and_background_runs(api: Api, node) -> None:
    tool, ghost, data, pipeline = unique("tool"), unique("ghost"), unique("data"), unique("slow")
    api.tool(tool)
    api.tool(ghost, image="mao-test/no-such-image:1")
    api.local_dataset(data)
    api.ok(
        api.post(
            "/pipeline/init",
            {"name": pipeline, "steps": [step("slow", tool, data, sh("sleep 30"), timeout=1)]},
        )
    )
    started = time.monotonic()
    accepted = api.post("/pipeline/run", {"name": pipeline, "wait": False})
    assert accepted.status_code == 202
    run_id = accepted.json()["id"]
    # While it runs, a second run of the same pipeline is refused rather than stacked.
    assert_error(api.post("/pipeline/run", {"name": pipeline}), 409, "run_in_progress")
    run = wait_for_run(api, run_id)
    assert time.monotonic() - started < 25
    assert run["status"] == "failed" and "timed out" in run["steps"][0]["error"]

    missing = unique("missing")
    api.ok(api.post("/pipeline/init", {"name": missing, "steps": [step("s", ghost, data, None)]}))
    run = api.run(missing)
    assert run["status"] == "failed" and "no-such-image" in run["steps"][0]["error"]


def test_private_variables_stay_on_the_instance(api: Api) -> None:
    tool, data, pipeline = unique("tool"), unique("data"), unique("secret")
    api.tool(tool)
    api.local_dataset(data)
    secret = "s3cr3t-" + unique("v")
    crawler = step(
        "crawl",
        tool,
        data,
        sh('test "$API_KEY" = "$EXPECTED_PREFIX${API_KEY#s3cr3t-}" && echo "key is $API_KEY"'),
    )
    crawler["env"] = {"API_KEY": "{{ MAO_PRIVATE_VARIABLE }}", "EXPECTED_PREFIX": "s3cr3t-"}
    body = {"name": pipeline, "steps": [crawler]}
    error = assert_error(api.post("/pipeline/init", body), 400, "missing_private_values")
    assert error["missing"] == ["crawl.API_KEY"]

    crawler["private_env"] = {"API_KEY": secret}
    init = api.ok(api.post("/pipeline/init", body))
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    assert "key is ***" in run["steps"][0]["log_tail"]
    for response in (
        init,
        api.ok(api.get("/pipeline")),
        api.ok(api.get(f"/registry/pipelines/{pipeline}")),
        run,
    ):
        assert secret not in str(response)
    assert (
        api.ok(api.get(f"/pipeline/{pipeline}"))["steps"][0]["env"]["API_KEY"] == "{{ MAO_PRIVATE_VARIABLE }}"
    )


def test_init_with_unregistered_tools_or_datasets_writes_nothing(api: Api) -> None:
    pipeline = unique("incomplete")
    tool, ghost_ds = unique("ghost-tool"), unique("ghost-ds")
    body = {"name": pipeline, "steps": [step("s", tool, ghost_ds, None)]}
    error = assert_error(api.post("/pipeline/init", body), 400)
    assert error["ok"] is False and error["steps"] == []
    assert error["errors"] == {"missing_tools": [tool], "missing_datasets": [ghost_ds]}
    assert_error(api.get(f"/registry/pipelines/{pipeline}"), 404)
    assert pipeline not in [p["name"] for p in api.ok(api.get("/pipeline"))]


def test_unreachable_master_is_a_clear_error_and_writes_nothing(api: Api) -> None:
    tool, data, pipeline = unique("tool"), unique("data"), unique("nowhere")
    api.tool(tool)
    api.ok(
        api.post(
            # Relative: under the node's MAO_MASTER_ROOTS (any other local path is refused), and absent.
            "/registry/datasets", {"name": data, "body": {"master": "nonexistent/repo.git", "nodes": []}}
        )
    )
    error = assert_error(
        api.post("/pipeline/init", {"name": pipeline, "steps": [step("s", tool, data, None)]}),
        503,
        "git_error",
    )
    assert "nonexistent/repo.git" in error["message"]
    assert_error(api.get(f"/registry/pipelines/{pipeline}"), 404)
    assert api.ok(api.get(f"/registry/datasets/{data}"))["nodes"] == []


def test_delete_pipeline_keeps_history_and_datasets(api: Api) -> None:
    tool, data, pipeline = unique("tool"), unique("data"), unique("gone")
    api.tool(tool)
    api.local_dataset(data)
    api.ok(
        api.post(
            "/pipeline/init", {"name": pipeline, "steps": [step("s", tool, data, sh(f"date > {APP}/data/d"))]}
        )
    )
    run = api.run(pipeline)
    job = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "0 3 * * *"}))
    assert_error(api.delete(f"/registry/tools/{tool}"), 409, "tool_in_use")
    deleted = api.ok(api.delete(f"/pipeline/{pipeline}"))
    assert deleted["unregistered"] is True and deleted["schedules_removed"] == [job["job_id"]]
    assert job["job_id"] not in api.ok(api.get("/jobs"))
    assert_error(api.get(f"/registry/pipelines/{pipeline}"), 404)
    assert_error(api.delete(f"/pipeline/{pipeline}"), 404)
    assert api.ok(api.get(f"/runs/{run['id']}"))["status"] == "succeeded"
    assert api.ok(api.get(f"/registry/datasets/{data}"))["nodes"] == [f"s-{api.ok(api.get('/'))['instance']}"]
    api.ok(api.delete(f"/registry/tools/{tool}"))


def test_same_pipeline_on_two_instances_shares_one_registration(sqlite_node, postgres_node) -> None:
    a, b = sqlite_node.api, postgres_node.api
    tool, data, pipeline = unique("tool"), unique("data"), unique("both")
    a.tool(tool)
    a.local_dataset(data)
    body = {"name": pipeline, "steps": [step("vote", tool, data, sh(f"echo $MAO_X > {APP}/data/x"))]}
    a.ok(a.post("/pipeline/init", body))
    b.ok(b.post("/pipeline/init", body))
    registration = a.ok(a.get(f"/registry/pipelines/{pipeline}"))
    assert sorted(registration["instances"]) == sorted([sqlite_node.name, postgres_node.name])
    different = {"name": pipeline, "steps": [step("other", tool, data, None)]}
    assert_error(b.post("/pipeline/init", different), 409, "pipeline_differs")
    assert a.ok(a.delete(f"/pipeline/{pipeline}"))["unregistered"] is False
    assert b.ok(b.delete(f"/pipeline/{pipeline}"))["unregistered"] is True
