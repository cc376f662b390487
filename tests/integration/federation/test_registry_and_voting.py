"""Shared registries, and several instances voting into one dataset's ground-truth."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from orchestrator.federation.etcd import Etcd
from orchestrator.federation.locks import Locks
from tests import gitutil, servers
from tests.api import unique

from .conftest import Federation

APP = "/usr/src/app"


def test_a_registration_on_one_instance_is_seen_by_the_others_at_once(federation: Federation) -> None:
    a, b, c = federation.a.api, federation.b.api, federation.c.api
    delays = []
    for _ in range(20):
        tool = unique("shared-tool")
        a.tool(tool)
        written = time.monotonic()
        # Reads are linearizable: the very next read on another instance must see it.
        assert b.ok(b.get(f"/registry/tools/{tool}"))["name"] == tool
        delays.append(time.monotonic() - written)
        assert tool in c.ok(c.get("/registry/tools"))
    print(f"\nregistry: written on fed-a, read on fed-b: median {statistics.median(delays) * 1000:.1f} ms")
    data = unique("shared-data")
    a.local_dataset(data)
    assert c.ok(c.get(f"/registry/datasets/{data}"))["master"].endswith(f"{data}.git")
    # Only its owner removes it (test_ownership.py); gone for everyone at once.
    assert c.delete(f"/registry/datasets/{data}").status_code == 403
    a.ok(a.delete(f"/registry/datasets/{data}"))
    assert b.get(f"/registry/datasets/{data}").status_code == 404


def _init_everywhere(federation: Federation, pipeline: str, tool: str, data: str, script: str) -> None:
    step = {"name": "vote", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", script]}
    for api in federation.apis():
        api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))


def test_three_concurrent_runs_vote_into_one_ground_truth(federation: Federation) -> None:
    tool, data, pipeline = unique("tool"), unique("votes"), unique("vote")
    federation.a.api.tool(tool)
    repo = federation.a.api.local_dataset(data)
    # Each instance writes its own file: the environment tells the tool where it runs.
    _init_everywhere(
        federation,
        pipeline,
        tool,
        data,
        f'echo "$MAO_RUN_ID $MAO_PIPELINE $MAO_STEP" > {APP}/data/$MAO_INSTANCE.txt',
    )
    before = gitutil.tip(repo, "ground-truth")
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda api: api.run(pipeline), federation.apis()))
    for name, run in zip(federation.nodes, runs, strict=True):
        assert run["status"] == "succeeded", run
        (step,) = run["steps"]
        assert step["merge"] == "merged" and step["branch"] == f"vote-{name}"
        assert gitutil.show(repo, "ground-truth", f"{name}.txt").split() == [run["id"], pipeline, "vote"]
    # Three merge commits on top of the old ground-truth, one per instance's node branch: none lost.
    merges = gitutil.git(repo, "rev-list", "--merges", f"{before}..ground-truth").split()
    assert len(merges) == 3
    merged_branches = {gitutil.trailers(repo, m)["MAO-Instance"] for m in merges}
    assert merged_branches == set(federation.nodes)
    registered = federation.b.api.ok(federation.b.api.get(f"/registry/datasets/{data}"))["nodes"]
    assert sorted(registered) == sorted(f"vote-{name}" for name in federation.nodes)
    assert federation.c.api.ok(federation.c.api.get("/locks")) == [] or all(
        lock["dataset"] != data for lock in federation.c.api.ok(federation.c.api.get("/locks"))
    )


def test_a_conflict_across_instances_leaves_ground_truth_alone(federation: Federation) -> None:
    a, b = federation.a.api, federation.b.api
    tool, data, pipeline = unique("tool"), unique("shared"), unique("clash")
    a.tool(tool)
    repo = a.local_dataset(data)
    _init_everywhere(
        federation, pipeline, tool, data, f'echo "$MAO_INSTANCE $MAO_RUN_ID" > {APP}/data/shared.txt'
    )
    assert b.run(pipeline)["status"] == "succeeded"  # fed-b's branch starts from ground-truth
    assert a.run(pipeline)["status"] == "succeeded"  # fed-a changes the same file after it
    before = gitutil.tip(repo, "ground-truth")
    # fed-b changes the file again on its own branch, which does not have fed-a's change: a conflict.
    clash = b.run(pipeline)
    assert clash["status"] == "failed", clash
    (step,) = clash["steps"]
    assert (
        step["status"] == "conflict" and step["conflicts"] == ["shared.txt"] and step["merge"] == "conflict"
    )
    assert "conflicts with ground-truth" in clash["error"]
    assert gitutil.tip(repo, "ground-truth") == before
    assert gitutil.show(repo, "ground-truth", "shared.txt").startswith("fed-a ")
    # The lock was released: another instance merges right away.
    assert all(lock["dataset"] != data for lock in federation.c.api.ok(federation.c.api.get("/locks")))
    assert federation.c.api.run(pipeline)["status"] == "succeeded"


HOLDER = """
import asyncio, sys, time
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.locks import Locks

async def main():
    endpoints = [(e.rsplit(":", 1)[0], int(e.rsplit(":", 1)[1])) for e in sys.argv[1].split(",")]
    etcd = Etcd(endpoints, timeout=2)
    async with Locks(etcd, "doomed-holder", ttl=int(sys.argv[3])).dataset(sys.argv[2], "hold until killed"):
        print("lock", "held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_dead_lock_holder_frees_the_lock_within_its_ttl(federation: Federation, servers_tmp) -> None:
    ttl, dataset = 3, unique("locked")
    endpoints = ",".join(m.endpoint for m in federation.etcd)
    holder = servers.ManagedProcess(
        [sys.executable, "-c", HOLDER, endpoints, dataset, str(ttl)],
        servers_tmp / "logs" / "lock-holder.log",
        cwd=servers.REPO_ROOT,
        name="lock-holder",
    )
    try:
        servers.wait_until(
            lambda: "lock held" in holder.log_text().splitlines(), timeout=30, what="the lock to be held"
        )
        locks = federation.a.api.ok(federation.a.api.get("/locks"))
        (lock,) = [lock for lock in locks if lock["dataset"] == dataset]
        assert lock["instance"] == "doomed-holder" and lock["purpose"] == "hold until killed"
        assert set(lock) == {"key", "dataset", "instance", "purpose", "acquired_at"}
    finally:
        holder.kill()
    killed = time.monotonic()

    async def acquire() -> float:
        etcd = Etcd([(m.host, m.client_port) for m in federation.etcd], timeout=2)
        try:
            async with Locks(etcd, "successor", ttl=ttl, wait=60).dataset(dataset, "take over"):
                return time.monotonic() - killed
        finally:
            await etcd.close()

    waited = asyncio.run(acquire())
    print(f"\nlock of a SIGKILLed holder acquired by another {waited:.1f} s later (lease TTL {ttl} s)")
    assert waited < 2 * ttl + 2
