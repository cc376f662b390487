"""Overlap ``allow`` against the real stack (Docker, git, etcd): two runs of one pipeline side by
side, each step in a folder of its own; both succeed and both outputs reach ground-truth. Outputs
that clash on a path: the later commit is a ``conflict`` naming the path, and kept."""

from __future__ import annotations

from datetime import datetime

from tests.api import Api, assert_error, unique
from tests.gitutil import git

from .test_schedule_semantics import poll

APP = "/usr/src/app"


def _pipeline(api: Api, command: str) -> tuple[str, str]:
    """A one-step pipeline running ``command``; (pipeline, its dataset's master)."""
    tool, data, pipeline = unique("tool"), unique("side"), unique("allow")
    api.tool(tool)
    master = api.local_dataset(data)
    step = {"name": "work", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", command]}
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    return pipeline, master


def _run(api: Api, run_id: str) -> dict:
    return api.ok(api.get(f"/runs/{run_id}"))


def _ended(api: Api, *run_ids: str) -> list[dict] | None:
    runs = [_run(api, r) for r in run_ids]
    return runs if all(r["status"] not in ("pending", "running") for r in runs) else None


def test_two_runs_side_by_side_both_succeed_and_both_outputs_reach_ground_truth(sqlite_node) -> None:
    api = sqlite_node.api
    # Each run writes a file of its own name: no clash.
    pipeline, master = _pipeline(api, f"sleep 6; echo $MAO_RUN_ID > {APP}/data/$MAO_RUN_ID.txt")
    first = api.run(pipeline, wait=False)["id"]
    assert poll(lambda: _run(api, first)["status"] == "running"), _run(api, first)
    # Without overlap: the prototype's 409 while a run goes.
    assert_error(api.post("/pipeline/run", {"name": pipeline, "wait": False}), 409, "run_in_progress")
    second = api.run(pipeline, wait=False, overlap="allow")["id"]
    assert second != first
    assert poll(lambda: _run(api, second)["status"] == "running"), _run(api, second)
    runs = poll(lambda: _ended(api, first, second), timeout=180)
    assert runs, [_run(api, first), _run(api, second)]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], runs
    one, two = runs
    # Side by side in time: each started before the other ended.
    assert datetime.fromisoformat(two["started_at"]) < datetime.fromisoformat(one["ended_at"])
    assert datetime.fromisoformat(one["started_at"]) < datetime.fromisoformat(two["ended_at"])
    files = git(master, "ls-tree", "-r", "--name-only", "ground-truth").split()
    assert f"{first}.txt" in files and f"{second}.txt" in files, files
    # The later commit merged the earlier one on the node branch: one branch holds both.
    branch = one["steps"][0]["branch"]
    assert sorted(git(master, "ls-tree", "-r", "--name-only", branch).split()) == sorted(files)
    assert f"Merge side-by-side output into {branch}" in git(master, "log", "--format=%s", branch)
    # The second run's own folder is gone once it ended.
    lanes = sqlite_node.data_dir / "work" / _dataset(api, pipeline) / ".lanes"
    assert not lanes.exists() or not any(lanes.iterdir())


def test_outputs_that_clash_make_the_later_commit_a_conflict_that_is_kept(sqlite_node) -> None:
    api = sqlite_node.api
    # Both write the same path; the second starts well within the first's sleep, so both folders
    # are prepared from the same commit and whichever commits later clashes.
    pipeline, master = _pipeline(api, f"sleep 8; echo $MAO_RUN_ID > {APP}/data/same")
    first = api.run(pipeline, wait=False)["id"]
    assert poll(lambda: _run(api, first)["status"] == "running"), _run(api, first)
    second = api.run(pipeline, wait=False, overlap="allow")["id"]
    runs = poll(lambda: _ended(api, first, second), timeout=180)
    assert runs, [_run(api, first), _run(api, second)]
    statuses = sorted(r["status"] for r in runs)
    assert statuses == ["failed", "succeeded"], runs
    loser = next(r for r in runs if r["status"] == "failed")
    step = loser["steps"][0]
    assert step["status"] == "conflict" and step["conflicts"] == ["same"], step
    winner = next(r for r in runs if r["status"] == "succeeded")
    assert git(master, "show", "ground-truth:same").strip() == winner["id"]
    # The clashing commit is kept on this instance (refs/mao/unmerged/...), recorded on the step.
    repo = sqlite_node.data_dir / "datasets" / f"{_dataset(api, pipeline)}.git"
    assert git(repo, "cat-file", "-t", step["output_commit"]).strip() == "commit"


def _dataset(api: Api, pipeline: str) -> str:
    return str(api.ok(api.get(f"/pipeline/{pipeline}"))["steps"][0]["output_dataset"])


def test_a_schedule_takes_overlap_allow(api: Api) -> None:
    pipeline, _ = _pipeline(api, "true")
    job = api.ok(api.post("/pipeline/run", {"name": pipeline, "cron": "0 0 * * *", "overlap": "allow"}))
    assert job["overlap"] == "allow"
    mine = [s for s in api.ok(api.get("/schedules")) if s["id"] == job["job_id"]]
    assert [s["overlap"] for s in mine] == ["allow"]
    api.ok(api.delete(f"/jobs/{pipeline}"))
