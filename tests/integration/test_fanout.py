"""Fan-out steps end to end: real executor and Docker, real git remotes, real etcd, both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests import gitutil, servers
from tests.api import Api, assert_error, unique

from .conftest import orchestrator_env

APP = "/usr/src/app"
# Twenty input files in/01.txt .. in/20.txt (content: the number), and one file the glob leaves out.
MAKE_INPUTS = (
    f"mkdir -p {APP}/data/in; for i in $(seq -w 1 20); do echo $i > {APP}/data/in/$i.txt; done; "
    f"echo not an input > {APP}/data/other.dat"
)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def fan_pipeline(
    api: Api, script: str, names: dict[str, str] | None = None, **fan_fields: Any
) -> dict[str, str]:
    """A two-step pipeline: ``make`` writes 20 inputs, ``fan`` fans ``script`` out over them in
    shards of 5. Returns the names (``pipeline``, ``tool``, ``raw``, ``report``) and ``repo``, the
    report dataset's repository; ``names`` reuses a previous pipeline's tool and datasets."""
    if names is None:
        names = {"tool": unique("tool"), "raw": unique("raw"), "report": unique("report")}
        api.tool(names["tool"])
        api.local_dataset(names["raw"])
        names["repo"] = api.local_dataset(names["report"])
    names = {**names, "pipeline": unique("fan")}
    steps = [
        {"name": "make", "tool": names["tool"], "output_dataset": names["raw"], "cmd": sh(MAKE_INPUTS)},
        {
            "name": "fan",
            "tool": names["tool"],
            "input_dataset": names["raw"],
            "output_dataset": names["report"],
            "cmd": sh(script),
            "fan_out": {"glob": "in/*.txt", "split_size": 5, "max_parallel": 2},
            **fan_fields,
        },
    ]
    api.ok(api.post("/pipeline/init", {"name": names["pipeline"], "steps": steps}))
    return names


def test_fan_out_of_20_files_in_shards_of_5_makes_one_commit_and_one_merge(api: Api, node) -> None:
    script = (
        f"set -e; before=$(ls -A {APP}/data | wc -l); "
        f"for f in {APP}/input/in/*.txt; do b=$(basename $f .txt); cat $f > {APP}/data/$b.out; done; "
        f"seen=$(find {APP}/input -type f | wc -l); "
        f'echo "$MAO_SHARD $MAO_SHARD_COUNT $MAO_ATTEMPT $before $seen" > {APP}/data/shard-$MAO_SHARD.txt; '
        f"echo shard $MAO_SHARD done"
    )
    made = fan_pipeline(api, script)
    pipeline, repo = made["pipeline"], made["repo"]
    before = gitutil.tip(repo, "ground-truth")
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    fan = run["steps"][1]
    assert fan["status"] == "succeeded"
    assert fan["shards"] == {"count": 4, "succeeded": 4, "failed": 0, "speculative": 0}
    shards = sorted((a["shard"], a["attempt"], a["status"]) for a in fan["attempts"])
    assert shards == [(n, 1, "succeeded") for n in range(1, 5)]

    # Each container saw only its 5 files, an empty data folder, and its shard number.
    for n in range(1, 5):
        assert gitutil.show(repo, "ground-truth", f"shard-{n}.txt").split() == [str(n), "4", "1", "0", "5"]
    for i in range(1, 21):
        assert gitutil.show(repo, "ground-truth", f"{i:02}.out").strip() == f"{i:02}"
    # One commit on the node branch, one merge into ground-truth.
    assert gitutil.git(repo, "rev-list", "--count", f"{before}..ground-truth").strip() == "2"
    assert gitutil.git(repo, "rev-list", "--merges", "--count", f"{before}..ground-truth").strip() == "1"
    assert fan["merge_commit"] == gitutil.tip(repo, "ground-truth")
    trailers = gitutil.trailers(repo, fan["output_commit"])
    assert trailers["MAO-Step"] == "fan" and trailers["MAO-Shards"] == "4"
    assert trailers["MAO-Input-Commit"] == fan["input_commit"]


def test_two_shards_writing_the_same_path_fail_the_step_naming_it(api: Api, node) -> None:
    script = f"echo $MAO_SHARD > {APP}/data/summary.txt; touch {APP}/data/own-$MAO_SHARD"
    made = fan_pipeline(api, script)
    pipeline, repo = made["pipeline"], made["repo"]
    before = gitutil.tip(repo, "ground-truth")
    run = api.run(pipeline)
    assert run["status"] == "failed"
    fan = run["steps"][1]
    assert fan["status"] == "failed"
    assert "summary.txt (shards 1, 2, 3, 4)" in fan["error"], fan["error"]
    assert fan["shards"]["succeeded"] == 4 and fan["output_commit"] is None
    assert gitutil.tip(repo, "ground-truth") == before
    assert f"fan-{node.name}" not in gitutil.branches(repo)


def test_a_failing_shard_is_retried_on_its_own(api: Api, node) -> None:
    script = (
        f'if [ "$MAO_SHARD" = 2 ] && [ "$MAO_ATTEMPT" = 1 ]; then echo shard 2 breaks; exit 4; fi; '
        f"cp {APP}/input/in/*.txt {APP}/data/"
    )
    made = fan_pipeline(api, script, retries=1, retry_delay=0)
    pipeline, repo = made["pipeline"], made["repo"]
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    fan = run["steps"][1]
    assert fan["shards"] == {"count": 4, "succeeded": 4, "failed": 0, "speculative": 0}
    attempts = sorted((a["shard"], a["attempt"], a["status"], a["exit_code"]) for a in fan["attempts"])
    assert attempts == [
        (1, 1, "succeeded", 0),
        (2, 1, "failed", 4),
        (2, 2, "succeeded", 0),
        (3, 1, "succeeded", 0),
        (4, 1, "succeeded", 0),
    ]
    assert gitutil.show(repo, "ground-truth", "07.txt").strip() == "07"


def test_a_shard_out_of_attempts_fails_the_step_and_pushes_nothing(api: Api, node) -> None:
    script = f'if [ "$MAO_SHARD" = 3 ]; then echo broken >&2; exit 5; fi; cp {APP}/input/in/*.txt {APP}/data/'
    made = fan_pipeline(api, script, retries=1, retry_delay=0)
    pipeline, repo = made["pipeline"], made["repo"]
    before = gitutil.tip(repo, "ground-truth")
    run = api.run(pipeline)
    assert run["status"] == "failed"
    fan = run["steps"][1]
    assert "shard 3/4 failed (2 failed attempts)" in fan["error"], fan["error"]
    assert fan["shards"]["failed"] == 1
    assert "broken" in fan["log_tail"]
    assert [a["status"] for a in fan["attempts"] if a["shard"] == 3] == ["failed", "failed"]
    assert gitutil.tip(repo, "ground-truth") == before


def test_fan_out_field_is_checked_at_init(api: Api) -> None:
    tool, data = unique("tool"), unique("data")
    api.tool(tool)
    api.local_dataset(data)

    def init(**fields: Any) -> Any:
        step = {"name": "s", "tool": tool, "output_dataset": data, "input_dataset": data, "cmd": None}
        return api.post("/pipeline/init", {"name": unique("p"), "steps": [{**step, **fields}]})

    body = assert_error(init(input_dataset=None, fan_out={"glob": "*"}), 400)
    assert "fan_out" in body["message"] and "input" in body["message"]
    for bad in (
        {"glob": "../*"},
        {"glob": "/etc/*"},
        {"glob": "*", "split_size": 0},
        {"glob": "*", "max_parallel": 100000},
        {"glob": "*", "max_paralel": 2},
        {"split_size": 2},
    ):
        body = assert_error(init(fan_out=bad), 400)
        assert "fan_out" in body["message"], body
    api.ok(init(fan_out={"glob": "**/*.csv", "split_size": 10, "max_parallel": 3}))


def test_sigkill_mid_fan_out_then_restart_leaves_no_container_and_no_double_merge(
    servers_tmp: Path, etcd, executor, docker_engine, busybox_image
) -> None:
    name = unique("node-kill")
    env = orchestrator_env(name, servers_tmp / name, etcd.endpoint, executor)
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
    try:
        api = Api(service.url)
        script = f"sleep 600; cp {APP}/input/in/*.txt {APP}/data/"
        made = fan_pipeline(api, script)
        pipeline, repo = made["pipeline"], made["repo"]
        before = gitutil.tip(repo, "ground-truth")
        run_id = api.run(pipeline, wait=False)["id"]

        def running() -> list[Any]:
            return docker_engine.containers.list(ignore_removed=True, filters={"label": f"mao.run={run_id}"})

        servers.wait_until(lambda: len(running()) == 2, timeout=120, what="two shard containers running")
        service.kill()  # SIGKILL: no chance to clean up
        service.process.start()
        service.wait_ready()
        servers.wait_until(lambda: running() == [], timeout=60, what="the shard containers to be removed")
        record = servers.wait_until(
            lambda: (r := api.ok(api.get(f"/runs/{run_id}")))["status"] not in ("pending", "running") and r,
            timeout=60,
            what="the interrupted run to be closed",
        )
        assert record["status"] == "failed", record
        assert record["steps"][1]["status"] in ("failed", "skipped"), record["steps"][1]
        assert all(a["status"] != "running" for a in record["steps"][1]["attempts"])
        assert gitutil.tip(repo, "ground-truth") == before  # nothing of the interrupted step merged

        # Another pipeline with the same step on the same datasets (so the same node branch and work
        # folder) runs to its end and merges exactly once.
        quick = fan_pipeline(api, f"cp {APP}/input/in/*.txt {APP}/data/", names=made)
        again = api.run(quick["pipeline"])
        assert again["status"] == "succeeded", again
        merges = gitutil.git(repo, "log", "--merges", "--format=%H", f"{before}..ground-truth").split()
        assert merges == [again["steps"][1]["merge_commit"]]
    finally:
        service.stop()


def test_cancel_mid_fan_out_kills_every_shard_and_pushes_nothing(api: Api, node, docker_engine) -> None:
    made = fan_pipeline(api, f"sleep 600; cp {APP}/input/in/*.txt {APP}/data/")
    before = gitutil.tip(made["repo"], "ground-truth")
    run_id = api.run(made["pipeline"], wait=False)["id"]

    def running() -> list[Any]:
        return docker_engine.containers.list(all=True, ignore_removed=True, filters={"label": f"mao.run={run_id}"})

    servers.wait_until(lambda: len(running()) == 2, timeout=120, what="two shard containers running")
    assert api.post(f"/runs/{run_id}/cancel").status_code == 202
    servers.wait_until(lambda: running() == [], timeout=30, what="the shard containers to be removed")
    record = servers.wait_until(
        lambda: (r := api.ok(api.get(f"/runs/{run_id}")))["status"] == "cancelled" and r,
        timeout=30,
        what="the run to end cancelled",
    )
    fan = record["steps"][1]
    assert fan["status"] == "cancelled"
    assert sorted((a["shard"], a["status"]) for a in fan["attempts"]) == [(1, "cancelled"), (2, "cancelled")]
    assert fan["shards"] == {"count": 4, "succeeded": 0, "failed": 0, "speculative": 0}
    assert gitutil.tip(made["repo"], "ground-truth") == before
    assert f"fan-{node.name}" not in gitutil.branches(made["repo"])
