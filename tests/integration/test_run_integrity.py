"""A run's record never lies, and a tool's disk use is bounded (issue 18, sections 1 and 6), against a
real orchestrator, executor, Docker and git (docs/security.md#tools).

From a tool's position: an output 1,100 folders deep (recursive walks used to die of RecursionError
in the hygiene check, the shard walk and the clean-ups), more entries than MAO_STEP_MAX_FILES, a
write to the root file system or past /tmp's size, a data disk filled during the step's bookkeeping.
From a member's: the same deep tree pushed into an input dataset, a master that refuses a push. In
every case the waiting POST /pipeline/run answers a final state naming the cause, nothing of the
failed step reaches a later commit, and the next run works.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.datasets.trees import remove_tree
from tests import gitutil, servers
from tests.api import Api, unique
from tests.integration.conftest import Node, orchestrator_env

APP = "/usr/src/app"
MAX_FILES = 250
TMP_SIZE = 8 * 1024 * 1024
FINAL_STEP = ("succeeded", "failed", "conflict", "skipped", "cancelled", "cached")
# 1,100 folders inside the container, by a tool (busybox sh): past Python's recursion limit.
DEEP_TOOL = (
    f"cd {APP}/data; i=0; while [ $i -lt 1100 ]; do mkdir d && cd d || exit 9; i=$((i+1)); done; echo x > end"
)


@pytest.fixture(scope="module")
def integrity_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    name = unique("integrity")
    data_dir = servers_tmp / name
    env = orchestrator_env(
        name,
        data_dir,
        etcd.endpoint,
        executor,
        MAO_STEP_MAX_FILES=str(MAX_FILES),
        MAO_STEP_TMP_SIZE=str(TMP_SIZE),
    )
    node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
    yield node
    node.service.stop()
    remove_tree(data_dir)  # pytest's own clean-up is shutil.rmtree: recursive


def steps(tool: str, data: str, script: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "s", "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", script], **extra}]


def pipeline_on(api: Api, script: str, **extra: Any) -> tuple[str, str, str, str]:
    """A tool, a local dataset and a one-step pipeline; (pipeline, tool, dataset, master path)."""
    tool, data, pipeline = unique("tool"), unique("data"), unique("pipe")
    api.tool(tool)
    repo = api.local_dataset(data)
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps(tool, data, script, **extra)}))
    return pipeline, tool, data, repo


def reinit(api: Api, pipeline: str, tool: str, data: str, script: str, **extra: Any) -> None:
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps(tool, data, script, **extra)}))


def assert_final(run: dict[str, Any], status: str) -> None:
    """The waiting POST's answer: the run's final state, every step and attempt final."""
    assert run["status"] == status, run
    assert run["ended_at"] is not None
    for step in run["steps"]:
        assert step["status"] in FINAL_STEP, step
        assert all(attempt["status"] != "running" for attempt in step["attempts"]), step


def work_folder(node: Node, data: str) -> Path:
    return node.data_dir / "work" / data / f"s-{node.name}"


def scratch_left(node: Node) -> list[str]:
    tmp = node.data_dir / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


# -- deep trees -------------------------------------------------------------------------------------


def test_a_tool_output_1100_folders_deep_fails_the_step_naming_the_path(integrity_node: Node) -> None:
    api = integrity_node.api
    pipeline, tool, data, repo = pipeline_on(api, DEEP_TOOL)
    run = api.run(pipeline)
    assert_final(run, "failed")
    step = run["steps"][0]
    assert step["status"] == "failed" and "deeper than the 128 folders" in step["error"], step
    assert "d/d/d/d" in step["error"] and "(129 levels)" in step["error"]
    assert run["error"] == step["error"]
    # Nothing of it anywhere: not pushed, not in the work folder, no scratch left.
    assert f"s-{integrity_node.name}" not in gitutil.branches(repo)
    assert not (work_folder(integrity_node, data) / "d").exists()
    assert run["id"] not in scratch_left(integrity_node)
    # The node and the pipeline go on.
    reinit(api, pipeline, tool, data, f"echo fine > {APP}/data/fine.txt")
    again = api.run(pipeline)
    assert_final(again, "succeeded")
    assert gitutil.show(repo, "ground-truth", "fine.txt") == "fine\n"


def push_deep_tree(master: str, clone: Path, depth: int = 1100) -> str:
    """Another member, with plain git: a 1,100-folder-deep tree committed into ``master``'s
    ground-truth. Returns the commit."""
    git = ["git", "-c", "user.name=member", "-c", "user.email=member@elsewhere.test"]
    subprocess.run([*git, "clone", "-q", "-b", "ground-truth", master, str(clone)], check=True)
    fd = os.open(clone, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("end", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    subprocess.run([*git, "-C", str(clone), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(clone), "commit", "-qm", "a tree 1,100 folders deep"], check=True)
    subprocess.run([*git, "-C", str(clone), "push", "-q", "origin", "ground-truth"], check=True)
    return subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_same_tree_pushed_into_an_input_dataset_by_another_member(
    integrity_node: Node, tmp_path: Path
) -> None:
    api = integrity_node.api
    tool, source, out = unique("tool"), unique("source"), unique("out")
    api.tool(tool)
    source_repo, out_repo = api.local_dataset(source), api.local_dataset(out)
    reader = {"name": "reader", "tool": tool, "input_dataset": source, "output_dataset": out,
              "cmd": ["sh", "-c", f"ls {APP}/input > {APP}/data/seen.txt"]}  # fmt: skip
    fan = {**reader, "name": "fan", "fan_out": {"glob": "**/*"}, "needs": []}
    pipeline = unique("pipe")
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [reader, fan]}))  # syncs ground-truth
    try:
        push_deep_tree(source_repo, tmp_path / "member")
    finally:
        remove_tree(tmp_path / "member")
    run = api.run(pipeline)
    assert_final(run, "failed")
    for step in run["steps"]:
        assert step["status"] == "failed", step
        assert "deeper than the 128 folders" in step["error"] and "ground-truth" in step["error"], step
    assert run["id"] not in scratch_left(integrity_node)  # the 1,100-deep snapshot is gone too
    assert "reader-" + integrity_node.name not in gitutil.branches(out_repo)
    assert api.ok(api.get("/health"))


def test_more_entries_than_max_files_fail_the_step(integrity_node: Node) -> None:
    api = integrity_node.api
    pipeline, _, data, repo = pipeline_on(
        api, f"cd {APP}/data; i=0; while [ $i -lt {MAX_FILES + 20} ]; do : > f$i; i=$((i+1)); done"
    )
    run = api.run(pipeline)
    assert_final(run, "failed")
    assert f"more than MAO_STEP_MAX_FILES={MAX_FILES} entries" in run["steps"][0]["error"], run
    assert f"s-{integrity_node.name}" not in gitutil.branches(repo)


# -- a failed step leaves no trace --------------------------------------------------------------------


def test_a_rejected_push_leaves_no_trace_in_the_next_run(integrity_node: Node, tmp_path: Path) -> None:
    api = integrity_node.api
    pipeline, tool, data, repo = pipeline_on(api, f"echo failed-run > {APP}/data/failed.txt")
    refuse = tmp_path / "refuse-once"
    hook = Path(repo) / "hooks" / "pre-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(
        f"#!/bin/sh\nif [ -e {refuse} ]; then rm -f {refuse}; echo 'frozen for review' >&2; exit 1; fi\n"
    )
    hook.chmod(0o755)
    refuse.write_text("")
    failed = api.run(pipeline)
    assert_final(failed, "failed")
    error = failed["steps"][0]["error"]
    assert "the master refused it: pre-receive hook declined" in error and "nothing was pushed" in error, (
        error
    )
    failed_commit = failed["steps"][0]["output_commit"]
    assert failed_commit  # it was committed locally, then refused
    reinit(api, pipeline, tool, data, f"echo next-run > {APP}/data/next.txt")
    good = api.run(pipeline)
    assert_final(good, "succeeded")
    commit = good["steps"][0]["output_commit"]
    assert failed_commit not in gitutil.parents(repo, commit)  # built on what the master accepted
    files = gitutil.git(repo, "ls-tree", "-r", "--name-only", "ground-truth").split()
    assert "next.txt" in files and "failed.txt" not in files
    history = gitutil.git(repo, "rev-list", "ground-truth")
    assert failed_commit not in history


def test_insights_are_published_only_by_the_attempt_that_wrote_them(integrity_node: Node) -> None:
    api = integrity_node.api
    pipeline, tool, data, _ = pipeline_on(api, f"echo '{{\"n\": 1}}' > {APP}/data/insights.json")
    first = api.run(pipeline)
    assert_final(first, "succeeded")
    assert first["steps"][0]["insights"] == "published"
    # The next attempt finds insights.json in its work folder (from the branch) and leaves it alone.
    reinit(api, pipeline, tool, data, f"echo other > {APP}/data/other.txt")
    second = api.run(pipeline)
    assert_final(second, "succeeded")
    assert second["steps"][0]["insights"] is None, second["steps"][0]
    published = api.ok(api.post("/read", {"key": f"insights/{tool}"}))
    assert published["run"] == first["id"]  # still the first run's, not re-published


# -- interrupted runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["left running", "removed while the orchestrator was down"])
def test_temporary_folders_of_an_interrupted_run_are_removed(integrity_node: Node, container: str) -> None:
    """SIGKILL of the orchestrator mid-attempt: at start, a killed file batch's half-written folder
    goes at once; the run's input snapshot stays while its attempt can still be adopted (its
    container runs on) and goes when the run ends, adopted and succeeded or lost and failed."""
    api = integrity_node.api
    tool, source, out = unique("tool"), unique("source"), unique("out")
    api.tool(tool)
    api.local_dataset(source)
    api.local_dataset(out)
    step = {"name": "s", "tool": tool, "input_dataset": source, "output_dataset": out,
            "cmd": ["sh", "-c", "sleep 8"]}  # fmt: skip
    pipeline = unique("pipe")
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    run_id = api.ok(api.post("/pipeline/run", {"name": pipeline, "wait": False}))["id"]
    scratch = integrity_node.data_dir / "tmp" / run_id
    client = docker.from_env()
    try:

        def started() -> list[Any]:
            return client.containers.list(ignore_removed=True, filters={"label": f"mao.run={run_id}", "status": "running"})

        deadline = time.monotonic() + 60
        while not (scratch.is_dir() and started()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scratch.is_dir() and started(), "the run's input snapshot and container never appeared"
        git_dir = integrity_node.data_dir / "datasets" / f"{out}.git"
        (git_dir / "mao-tmp" / "half-written").mkdir(parents=True)  # as a killed file batch leaves it
        popen = integrity_node.service.process._popen  # noqa: SLF001 - the orchestrator alone, not the executor
        assert popen is not None
        os.kill(popen.pid, signal.SIGKILL)
        popen.wait(timeout=30)
        if container.startswith("removed"):
            for found in client.containers.list(ignore_removed=True, all=True, filters={"label": f"mao.run={run_id}"}):
                found.remove(force=True)
    finally:
        client.close()
    integrity_node.service.process.start()
    integrity_node.service.wait_ready()
    assert not list((git_dir / "mao-tmp").iterdir())
    deadline = time.monotonic() + 120
    while api.ok(api.get(f"/runs/{run_id}"))["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    record = api.ok(api.get(f"/runs/{run_id}"))
    # Left running, the attempt was adopted (or had ended before the kill): either way it succeeded.
    assert_final(record, "succeeded" if container == "left running" else "failed")
    assert not scratch.exists()


# -- the tool's disk while it runs ---------------------------------------------------------------------


def test_the_root_file_system_is_read_only_and_tmp_is_bounded(integrity_node: Node) -> None:
    api = integrity_node.api
    # The tool is not root: with a writable root file system it still may not write /usr, but the
    # error says why (permission, not a read-only file system).
    probe = (
        "touch /usr/evil 2>&1 | tail -n 1; "
        f"head -c {TMP_SIZE + 1024 * 1024} /dev/zero > /tmp/big 2>/dev/null && echo tmp-unbounded || echo tmp-full; "
        "rm -f /tmp/big; echo written > /tmp/small && echo tmp-writable; "
        f"echo ok > {APP}/data/ok.txt"
    )
    pipeline, tool, data, _ = pipeline_on(api, probe)
    run = api.run(pipeline)
    assert_final(run, "succeeded")
    tail = run["steps"][0]["log_tail"]
    assert "Read-only file system" in tail and "tmp-full" in tail and "tmp-writable" in tail, tail
    # The documented opt-out: a step that must write its root file system says so.
    reinit(api, pipeline, tool, data, probe, writable_root=True)
    opted = api.run(pipeline)
    assert_final(opted, "succeeded")
    tail = opted["steps"][0]["log_tail"]
    assert "Read-only file system" not in tail and "Permission denied" in tail and "tmp-full" in tail, tail


def test_a_running_tool_container_is_bounded(integrity_node: Node) -> None:
    api = integrity_node.api
    pipeline, _, _, _ = pipeline_on(api, "sleep 30")
    run_id = api.ok(api.post("/pipeline/run", {"name": pipeline, "wait": False}))["id"]
    client = docker.from_env()
    try:
        deadline = time.monotonic() + 60
        found = []
        while not found and time.monotonic() < deadline:
            found = client.containers.list(ignore_removed=True, filters={"label": f"mao.run={run_id}"})
            time.sleep(0.2)
        assert found, "the tool's container never ran"
        host = found[0].attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["Tmpfs"] == {"/tmp": f"rw,nosuid,nodev,size={TMP_SIZE},mode=1777"}
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "16m", "max-file": "2"}}
    finally:
        client.close()
        api.post(f"/runs/{run_id}/cancel", {})


# -- a full data disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk_node(servers_tmp: Path, etcd, executor, busybox_image) -> Iterator[Node]:
    """A node whose data dir is a 64 MiB file system of its own (tmpfs): a tool can fill it."""
    if os.getuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    name = unique("small-disk")
    data_dir = servers_tmp / name
    data_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(data_dir)], check=True)
    node = None
    try:
        env = orchestrator_env(name, data_dir, etcd.endpoint, executor)
        node = Node(servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name), data_dir)
        yield node
    finally:
        if node is not None:
            node.service.stop()
        subprocess.run(["umount", "-l", str(data_dir)], check=False)


FILL_DISK = f"head -c {200 * 1024 * 1024} /dev/urandom > {APP}/data/big 2>/dev/null; exit 0"
# Fits on the disk, but git's copy of it does not: the commit itself meets the full disk.
FILL_MOST = (
    f"free=$(df -k {APP}/data | awk 'NR==2 {{print $4}}'); "
    f"head -c $((free * 1024 * 6 / 10)) /dev/urandom > {APP}/data/big; exit 0"
)


@pytest.mark.parametrize(("script", "where"), [(FILL_DISK, "the database"), (FILL_MOST, "stage the output")])
def test_a_full_data_disk_during_the_steps_bookkeeping(
    small_disk_node: Node, script: str, where: str
) -> None:
    api = small_disk_node.api
    # Incompressible bytes: git needs as much again to store them.
    pipeline, tool, data, repo = pipeline_on(api, script)
    run = api.run(pipeline)
    assert_final(run, "failed")
    error = run["steps"][0]["error"]
    assert "disk is full" in error and where in error, error
    assert run["error"] == error
    assert f"s-{small_disk_node.name}" not in gitutil.branches(repo)
    # The failed step's folder was reset at once: the space is back, the next run works.
    assert not (work_folder(small_disk_node, data) / "big").exists()
    reinit(api, pipeline, tool, data, f"echo small > {APP}/data/small.txt")
    again = api.run(pipeline)
    assert_final(again, "succeeded")
    assert gitutil.show(repo, "ground-truth", "small.txt") == "small\n"
