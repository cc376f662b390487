"""The raw-entry listener: every entry an instance acknowledged reaches git once, across a crash."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests import gitutil, servers
from tests.api import Api, unique

from .conftest import orchestrator_env

ENTRIES = 25
TTL = 2


def ground_truth_files(master: str, prefix: str) -> list[str]:
    if "ground-truth" not in gitutil.branches(master):
        return []
    listed = gitutil.git(master, "ls-tree", "-r", "--name-only", "ground-truth", "--", prefix)
    return listed.split()


def test_acknowledged_entries_reach_git_exactly_once_across_a_crash(
    servers_tmp: Path, etcd, executor, sqlite_node
) -> None:
    data, base = unique("raw-data"), unique("lab")
    master = sqlite_node.api.local_dataset(data)  # a master every instance on this machine reaches
    name = unique("node-raw")
    env = orchestrator_env(
        name,
        servers_tmp / name,
        etcd.endpoint,
        executor,
        MAO_RAW_DATASET=data,
        MAO_RAW_BATCH_SECONDS="60",  # the first batch waits: the crash comes before its commit
        MAO_RAW_BATCH_SIZE="1000",
        MAO_RAW_TTL=str(TTL),
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
    try:
        api = Api(service.url)
        revisions = {}
        for i in range(ENTRIES):
            answer = api.ok(api.post("/write", {"key": f"{base}/e{i}", "value": {"i": i}}))
            revisions[f"{base}/e{i}"] = answer["revision"]
        # Written by another instance: that one answers for it, not this one.
        sqlite_node.api.ok(sqlite_node.api.post("/write", {"key": f"{base}/elsewhere", "value": 0}))
        assert f"raw-{name}" not in gitutil.branches(master)

        service.kill()  # SIGKILL: nothing of the batch was committed
        # Down for longer than the TTL: the entries are gone from etcd, only its history has them.
        servers.wait_until(
            lambda: list(sqlite_node.api.post("/inspect", {"key": base}).json()) == [f"raw/{base}/elsewhere"],
            timeout=30,
            what="the entries to expire",
        )
        service.process.env["MAO_RAW_BATCH_SECONDS"] = "0.5"
        service.process.start()
        service.wait_ready()
        restarted = time.monotonic()
        expected = sorted(f"{key}@{revision}.json" for key, revision in revisions.items())
        servers.wait_until(
            lambda: ground_truth_files(master, base) == expected,
            timeout=60,
            what="the entries in ground-truth",
        )
        print(f"\n{ENTRIES} entries in ground-truth {time.monotonic() - restarted:.1f} s after the restart")
        assert "resuming after revision" in service.log_text().split("start #2")[1]
        for key, revision in revisions.items():
            record = json.loads(gitutil.show(master, "ground-truth", f"{key}@{revision}.json"))
            assert record["key"] == f"raw/{key}" and record["revision"] == revision
            assert record["value"] == {"i": int(key.rsplit("e", 1)[1])} and record["instance"] == name
        assert f"raw-{name}" in api.ok(api.get(f"/registry/datasets/{data}"))["nodes"]
        merges = gitutil.git(master, "log", "--merges", "--format=%s", "ground-truth").splitlines()
        assert sum(f"raw-{name}" in m for m in merges) == 1

        # Committed, but as if the crash had come before the position was saved: the listener replays
        # etcd's history from before the first entry and writes nothing twice.
        tip = gitutil.tip(master, "ground-truth")
        service.stop()
        with sqlite3.connect(servers_tmp / name / "mao.db") as db:
            db.execute("UPDATE gateway_progress SET revision = ?", (min(revisions.values()) - 1,))
        service.process.start()
        service.wait_ready()
        replayed = servers.wait_until(
            lambda: [line for line in service.log_text().splitlines() if "were committed already" in line],
            timeout=60,
            what="the replayed batch",
        )
        assert f"raw listener: {ENTRIES} entries" in replayed[0]
        assert gitutil.tip(master, "ground-truth") == tip
        late = api.ok(api.post("/write", {"key": f"{base}/late", "value": "after"}))
        expected.append(f"{base}/late@{late['revision']}.json")
        servers.wait_until(
            lambda: ground_truth_files(master, base) == sorted(expected), timeout=60, what="the late entry"
        )
        new_commits = gitutil.git(master, "rev-list", f"{tip}..ground-truth").split()
        assert len(new_commits) == 2  # one commit on the node branch and its merge, for the late entry only
    finally:
        service.stop()
