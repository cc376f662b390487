"""Tools cannot take over the host: real Docker, git and orchestrator processes (docs/security.md#tools).

One orchestrator of this module's own (it is SIGKILLed and restarted here), with a small
MAO_STEP_MAX_OUTPUT, and a fake ``ssh`` (GIT_SSH_COMMAND) in front of one master so that a push can be
held open while the orchestrator is killed.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import gitutil, servers
from tests.api import Api, unique
from tests.integration.conftest import Node, orchestrator_env
from tests.integration.test_pipeline_runs import sh, step

APP = "/usr/src/app"
MAX_OUTPUT = 48 * 1024 * 1024
PUSH_HOLD = 12  # seconds the fake ssh holds a receive-pack before it starts it


@pytest.fixture(scope="module")
def fake_ssh(servers_tmp: Path) -> Path:
    """A GIT_SSH_COMMAND that runs the remote command locally, held PUSH_HOLD s while ``hold`` exists."""
    folder = servers_tmp / "fake-ssh"
    folder.mkdir(exist_ok=True)
    script = folder / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        "# GIT_SSH_VARIANT=simple: $1 is the host, $2 the remote command (git-upload-pack '<path>' ...)\n"
        'cmd="$2"\n'
        'case "$cmd" in git-receive-pack*)\n'
        f"  if [ -e {folder}/hold ]; then touch {folder}/started; sleep {PUSH_HOLD}; fi;;\n"
        "esac\n"
        'exec sh -c "$cmd"\n'
    )
    script.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def trust_node(servers_tmp: Path, etcd, executor, busybox_image, fake_ssh: Path) -> Iterator[Node]:
    name = unique("trust")
    data_dir = servers_tmp / name
    env = orchestrator_env(
        name,
        data_dir,
        etcd.endpoint,
        executor,
        MAO_STEP_MAX_OUTPUT=str(MAX_OUTPUT),
        MAO_LOCK_TTL="3",
        MAO_MEMBER_TTL="15",
        GIT_SSH_COMMAND=str(fake_ssh / "ssh"),
        GIT_SSH_VARIANT="simple",
        MAO_GIT_GC_INTERVAL="2",
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
    node = Node(service, data_dir)
    yield node
    node.service.stop()


def work_folder(node: Node, dataset: str, step_name: str) -> Path:
    return node.data_dir / "work" / dataset / f"{step_name}-{node.name}"


def special_bits(folder: Path) -> list[str]:
    found = []
    for path in [folder, *folder.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
            found.append(str(path))
    return found


def one_step(api: Api, command: str) -> tuple[str, str, str]:
    """A registered tool, a local dataset and an initialised one-step pipeline; (pipeline, data, repo)."""
    tool, data, pipeline = unique("tool"), unique("data"), unique("pipe")
    api.tool(tool)
    repo = api.local_dataset(data)
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step("s", tool, data, sh(command))]}))
    return pipeline, data, repo


def test_tool_is_not_root_cannot_chown_or_mknod_and_leaves_no_setuid_bit(trust_node: Node) -> None:
    api = trust_node.api
    script = (
        f"cd {APP}/data; id -u > uid.txt; id -g > gid.txt; "
        "cp /bin/busybox x && chmod u+s,g+s x; mkdir d && chmod 2777 d; "
        "ls -ln x; "
        "chown 0:0 uid.txt && echo chown-worked || echo chown-refused; "
        "mknod dev c 1 3 && echo mknod-worked || echo mknod-refused; "
        f"touch {APP}/input-less 2>/dev/null; true"
    )
    pipeline, data, repo = one_step(api, script)
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    log_tail = run["steps"][0]["log_tail"]
    assert "chown-refused" in log_tail and "mknod-refused" in log_tail, log_tail
    assert "rwsr-s" in log_tail  # the tool did set the bits, inside its container
    uid = gitutil.show(repo, "ground-truth", "uid.txt").strip()
    assert uid != "0" and uid == str(65534 if os.getuid() == 0 else os.getuid())
    folder = work_folder(trust_node, data, "s")
    assert special_bits(folder) == []
    # Back to the orchestrator after the step: nothing in the folder belongs to the tool's uid any more.
    assert {p.lstat().st_uid for p in [folder, *folder.rglob("*")]} == {os.getuid()}
    assert not (folder / "dev").exists()
    mode = subprocess.run(
        ["git", "--git-dir", repo, "ls-tree", "ground-truth", "x"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert mode == "100755"  # git keeps no setuid bit either


def test_a_failing_tool_leaves_nothing_in_its_folder(trust_node: Node) -> None:
    """A failed attempt's folder goes back to the node branch at once: no setuid binary, no FIFO,
    nothing of the tool's left on the host, everything the orchestrator's."""
    pipeline, data, _ = one_step(
        trust_node.api, f"cd {APP}/data; cp /bin/busybox x && chmod 6755 x; mkfifo p; exit 3"
    )
    run = trust_node.api.run(pipeline)
    assert run["status"] == "failed" and "exited with code 3" in run["error"], run
    folder = work_folder(trust_node, data, "s")
    assert not (folder / "x").exists() and not (folder / "p").exists() and special_bits(folder) == []
    assert {p.lstat().st_uid for p in [folder, *folder.rglob("*")]} == {os.getuid()}


def test_fifo_is_removed_and_an_inside_link_kept(trust_node: Node) -> None:
    pipeline, data, repo = one_step(
        trust_node.api,
        f"cd {APP}/data; mkfifo pipe; echo hi > a.txt; ln -s a.txt link; mkdir s; ln -s ../a.txt s/up",
    )
    run = trust_node.api.run(pipeline)
    assert run["status"] == "succeeded", run
    assert not (work_folder(trust_node, data, "s") / "pipe").exists()
    listing = subprocess.run(
        ["git", "--git-dir", repo, "ls-tree", "-r", "--name-only", "ground-truth"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "pipe" not in listing and {"a.txt", "link", "s/up"} <= set(listing), listing


@pytest.mark.parametrize(
    "link",
    ["ln -s /etc/passwd evil", "ln -s ../../../../etc evil", "ln -s . d; ln -s d/../.. evil"],
    ids=["absolute", "relative-up", "through-a-link"],
)
def test_symlink_out_of_the_output_fails_the_step_and_commits_nothing(trust_node: Node, link: str) -> None:
    pipeline, data, repo = one_step(trust_node.api, f"cd {APP}/data; echo x > ok.txt; {link}")
    before = gitutil.tip(repo, "ground-truth")
    run = trust_node.api.run(pipeline)
    assert run["status"] == "failed", run
    assert "evil" in run["error"] and "outside" in run["error"], run["error"]
    assert run["steps"][0]["output_commit"] is None
    assert gitutil.tip(repo, "ground-truth") == before
    assert f"s-{trust_node.name}" not in gitutil.branches(repo)


def test_output_over_max_output_fails_and_commits_nothing(trust_node: Node) -> None:
    pipeline, data, repo = one_step(
        trust_node.api, f"head -c {MAX_OUTPUT + 1} /dev/zero > {APP}/data/big; echo done"
    )
    before = gitutil.tip(repo, "ground-truth")
    run = trust_node.api.run(pipeline)
    assert run["status"] == "failed", run
    assert "MAO_STEP_MAX_OUTPUT" in run["error"] and str(MAX_OUTPUT + 1) in run["error"], run["error"]
    assert run["steps"][0]["output_commit"] is None and gitutil.tip(repo, "ground-truth") == before


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                ppid = int(handle.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append((int(entry), cmdline))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _sigkill_orchestrator_only(node: Node) -> None:
    """SIGKILL the orchestrator process alone (not its group): its git children must die by themselves."""
    popen = node.service.process._popen  # noqa: SLF001 - the harness has no single-process kill
    assert popen is not None
    os.kill(popen.pid, signal.SIGKILL)
    popen.wait(timeout=30)


def _restart(node: Node) -> None:
    node.service.process.start()
    node.service.wait_ready()


def test_sigkill_during_git_add_then_restart_clears_the_lock_and_the_next_run_succeeds(
    trust_node: Node,
) -> None:
    api = trust_node.api
    # Random data compresses slowly: `git add` of 40 MB takes long enough to be caught at work.
    size = 40 * 1024 * 1024
    pipeline, data, repo = one_step(
        api,
        f"if [ -e {APP}/data/small ]; then rm -f {APP}/data/big; else head -c {size} /dev/urandom > {APP}/data/big; fi; "
        f"touch {APP}/data/small",
    )
    pid = trust_node.service.pid
    assert pid is not None
    run_id = api.run(pipeline, wait=False)["id"]
    deadline = time.monotonic() + 120
    adding = None
    while adding is None and time.monotonic() < deadline:
        adding = next((c for c, cmd in _children(pid) if " add -A " in f" {cmd} "), None)
        time.sleep(0.005)
    assert adding is not None, "git add was not seen running"
    locks = Path(trust_node.data_dir) / "datasets" / f"{data}.git" / "mao-index"
    # Killed once it holds the index lock (it takes it first thing), as in the reported failure.
    servers.wait_until(
        lambda: any(locks.glob("*.lock")) or not _alive(adding), timeout=30, interval=0.002, what="index lock"
    )
    index_lock = next(iter(locks.glob("*.lock")), None)
    _sigkill_orchestrator_only(trust_node)
    servers.wait_until(lambda: not _alive(adding), timeout=10, what="git add to die with the orchestrator")
    assert index_lock is not None and index_lock.exists(), (
        "git add outlived the orchestrator, or ended before it could be killed"
    )

    _restart(trust_node)
    assert not index_lock.exists()
    assert "stale git lock file" in trust_node.service.log_text()
    killed = api.ok(api.get(f"/runs/{run_id}"))
    assert killed["status"] == "failed"
    assert f"s-{trust_node.name}" not in gitutil.branches(repo)  # nothing of the killed run landed
    again = api.run(pipeline)
    assert again["status"] == "succeeded", again
    assert gitutil.show(repo, "ground-truth", "small") == ""


def test_sigkill_during_push_then_restart_the_push_never_lands(trust_node: Node, fake_ssh: Path) -> None:
    api = trust_node.api
    tool, data, pipeline = unique("tool"), unique("data"), unique("push")
    api.tool(tool)
    path = api.ok(api.post("/bare-repo/init", {"name": data}))["path"]
    master = f"ssh://fake-host{path}"
    api.ok(api.post("/registry/datasets", {"name": data, "body": {"master": master, "nodes": []}}))
    api.ok(
        api.post(
            "/pipeline/init",
            {"name": pipeline, "steps": [step("s", tool, data, sh(f"echo $MAO_RUN_ID >> {APP}/data/stamp"))]},
        )
    )
    before = gitutil.tip(path, "ground-truth")
    hold, started = fake_ssh / "hold", fake_ssh / "started"
    started.unlink(missing_ok=True)
    hold.touch()
    try:
        pid = trust_node.service.pid
        assert pid is not None
        run_id = api.run(pipeline, wait=False)["id"]
        servers.wait_until(started.exists, timeout=120, interval=0.05, what="the push to reach the remote")
        pushes = [c for c, cmd in _children(pid) if " push " in f" {cmd} "]
        assert pushes, _children(pid)
        _sigkill_orchestrator_only(trust_node)
        servers.wait_until(lambda: not any(map(_alive, pushes)), timeout=10, what="git push to die")
    finally:
        hold.unlink(missing_ok=True)
    # The fake remote goes on after the hold; the push it serves is gone, so nothing may land.
    time.sleep(PUSH_HOLD + 3)
    assert gitutil.tip(path, "ground-truth") == before
    assert f"s-{trust_node.name}" not in gitutil.branches(path)

    _restart(trust_node)
    assert api.ok(api.get(f"/runs/{run_id}"))["status"] == "failed"
    again = api.run(pipeline)
    assert again["status"] == "succeeded", again
    assert gitutil.tip(path, "ground-truth") == again["steps"][0]["merge_commit"]


# -- init validates every step as the executor will, and leaves nothing behind -------------------------


def _cache_rows(node: Node) -> set[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(node.data_dir / "mao.db") as db:
        return {(kind, name) for kind, name in db.execute("SELECT kind, name FROM registry_cache")}


def _nothing_left(node: Node, pipeline: str, tool: str, data: str) -> None:
    assert node.api.get(f"/pipeline/{pipeline}").status_code == 404
    assert not (node.data_dir / "datasets" / f"{data}.git").exists()
    assert not {("tool", tool), ("dataset", data)} & _cache_rows(node)


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"cmd": ["sh", "-c", "echo a\x00b"]}, "invalid_request", "NUL"),
        ({"env": {"A": "x\x00y"}}, "invalid_request", "NUL"),
        ({"env": {f"V{i}": "x" * 60000 for i in range(20)}}, "step_too_large", "limit"),
        ({"docker_socket": True}, "step_rejected", "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES"),
        ({"docker_socket": "yes"}, "invalid_request", "docker_socket"),
        ({"timeout": "60"}, "invalid_request", "timeout"),
        ({"cpus": "1"}, "invalid_request", "cpus"),
        ({"memory": 1024}, "invalid_request", "memory"),
    ],
    ids=[
        "nul-cmd",
        "nul-env",
        "oversize",
        "socket-not-allowed",
        "yes",
        "sixty",
        "cpus-string",
        "memory-tiny",
    ],
)
def test_init_refuses_a_step_the_executor_would_refuse_and_leaves_nothing(
    trust_node: Node, change: dict, code: str, words: str
) -> None:
    api = trust_node.api
    tool, data, pipeline = unique("tool"), unique("data"), unique("bad")
    api.tool(tool)
    api.ok(
        api.post(
            "/registry/datasets",
            {"name": data, "body": {"master": api.local_dataset(unique("m")), "nodes": []}},
        )
    )
    response = api.post(
        "/pipeline/init", {"name": pipeline, "steps": [{**step("s", tool, data, ["true"]), **change}]}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == code and words in body["message"], body
    _nothing_left(trust_node, pipeline, tool, data)


def test_prototype_step_fields_and_limits_are_accepted(trust_node: Node) -> None:
    api = trust_node.api
    tool, data, pipeline = unique("tool"), unique("data"), unique("ok")
    api.tool(tool)
    api.local_dataset(data)
    fields = {"env": {"N": 3, "B": True}, "timeout": 60, "memory": "64m", "cpus": 0.5}
    init = api.ok(
        api.post("/pipeline/init", {"name": pipeline, "steps": [{**step("s", tool, data, None), **fields}]})
    )
    assert init["steps"][0]["memory"] == 64 * 1024 * 1024 and init["steps"][0]["cpus"] == 0.5
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run


def test_init_failing_after_the_clone_removes_the_new_local_repository(
    trust_node: Node, sqlite_node: Node
) -> None:
    # Another instance runs the pipeline with other steps: the federation refuses ours (409) after
    # this instance cloned the new dataset; the clone and the cached registrations go again.
    name, tool = unique("shared"), unique("tool")
    theirs, ours = unique("theirs"), unique("ours")
    sqlite_node.api.tool(tool)
    sqlite_node.api.local_dataset(theirs)
    sqlite_node.api.ok(
        sqlite_node.api.post("/pipeline/init", {"name": name, "steps": [step("s", tool, theirs, ["true"])]})
    )
    master = trust_node.api.local_dataset(ours)
    assert master
    response = trust_node.api.post(
        "/pipeline/init", {"name": name, "steps": [step("s", tool, ours, ["true"])]}
    )
    assert response.status_code == 409, response.text
    _nothing_left(trust_node, name, tool, ours)


def test_git_gc_runs_on_schedule_over_the_local_repositories(trust_node: Node) -> None:
    pipeline, data, _ = one_step(trust_node.api, f"echo x > {APP}/data/x")
    assert trust_node.api.run(pipeline)["status"] == "succeeded"
    # GitPython logs every command at DEBUG: a gc of this dataset's local repository shows there.
    local = str(trust_node.data_dir / "datasets" / f"{data}.git")
    servers.wait_until(
        lambda: any(
            "'gc', '--auto'" in line and local in line for line in trust_node.service.log_text().splitlines()
        ),
        timeout=60,
        what="a scheduled git gc of the dataset's local repository",
    )
    assert "git gc of" not in trust_node.service.log_text()  # no pass failed


def test_an_index_lock_error_names_the_file_and_a_restart_clears_it(trust_node: Node) -> None:
    api = trust_node.api
    pipeline, data, repo = one_step(api, f"echo $MAO_RUN_ID >> {APP}/data/stamp")
    assert api.run(pipeline)["status"] == "succeeded"
    lock = trust_node.data_dir / "datasets" / f"{data}.git" / "mao-index" / f"s-{trust_node.name}.lock"
    lock.write_text("")  # as a git add killed with an older orchestrator would have left it
    blocked = api.run(pipeline)
    assert blocked["status"] == "failed" and str(lock) in blocked["error"], blocked["error"]
    trust_node.restart()
    assert not lock.exists()
    assert api.run(pipeline)["status"] == "succeeded"
    assert gitutil.show(repo, "ground-truth", "stamp").count("\n") == 2


def owners(folder: Path) -> set[int]:
    return {p.lstat().st_uid for p in [folder, *folder.rglob("*")]}


def tool_uid() -> str:
    return str(65534 if os.getuid() == 0 else os.getuid())


def test_retries_and_the_fallback_tool_run_unprivileged_and_each_leaves_the_folder_reclaimed(
    trust_node: Node,
) -> None:
    """Every attempt of the run engine gets the folder handed over and taken back, not only the first."""
    api = trust_node.api
    tool, rescue, data, pipeline = unique("tool"), unique("rescue"), unique("data"), unique("pipe")
    api.tool(tool)
    api.tool(rescue)
    repo = api.local_dataset(data)
    script = (
        f"cd {APP}/data; id -u > uid-$MAO_TOOL-$MAO_ATTEMPT.txt; "
        f'if [ "$MAO_TOOL" = "{tool}" ]; then cp /bin/busybox x && chmod u+s x; mkfifo pipe; exit 3; fi'
    )
    body = {
        "name": pipeline,
        "steps": [step("s", tool, data, sh(script), retries=1, retry_delay=0.1, fallback_tool=rescue)],
    }
    api.ok(api.post("/pipeline/init", body))
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    attempts = [(a["tool"], a["status"]) for a in run["steps"][0]["attempts"]]
    assert attempts == [(tool, "failed"), (tool, "failed"), (rescue, "succeeded")], attempts
    # The folder is reset between attempts, so only the rescue's own file is committed, written as the tool uid.
    assert gitutil.show(repo, "ground-truth", f"uid-{rescue}-3.txt").strip() == tool_uid()
    folder = work_folder(trust_node, data, "s")
    assert owners(folder) == {os.getuid()}
    assert special_bits(folder) == [] and not (folder / "pipe").exists()


def test_fan_out_shards_write_their_folders_as_the_tool_uid_and_are_taken_back(trust_node: Node) -> None:
    api = trust_node.api
    tool, raw, report, pipeline = unique("tool"), unique("raw"), unique("report"), unique("fan")
    api.tool(tool)
    api.local_dataset(raw)
    repo = api.local_dataset(report)
    make = f"mkdir -p {APP}/data/in; for i in 1 2 3 4; do echo $i > {APP}/data/in/$i.txt; done"
    fan = (
        f"cd {APP}/data; id -u > uid-$MAO_SHARD.txt; ls -n {APP}/input/in > /dev/null; "
        f"cp {APP}/input/in/*.txt .; "
        f'if [ "$MAO_ATTEMPT" = 1 ] && [ "$MAO_SHARD" = 2 ]; then mkfifo pipe; exit 5; fi; '
        "cp /bin/busybox x-$MAO_SHARD && chmod u+s x-$MAO_SHARD"
    )
    steps = [
        step("make", tool, raw, sh(make)),
        step(
            "fan",
            tool,
            report,
            sh(fan),
            input_dataset=raw,
            retries=1,
            retry_delay=0,
            fan_out={"glob": "in/*.txt", "split_size": 2, "max_parallel": 2},
        ),
    ]
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    fan_step = run["steps"][1]
    assert fan_step["shards"]["count"] == 2 and fan_step["shards"]["succeeded"] == 2, fan_step
    for shard in (1, 2):
        assert gitutil.show(repo, "ground-truth", f"uid-{shard}.txt").strip() == tool_uid()
    for i in range(1, 5):
        assert gitutil.show(repo, "ground-truth", f"{i}.txt").strip() == str(i)
    files = gitutil.git(repo, "ls-tree", "--name-only", "ground-truth").split()
    assert "pipe" not in files
    folder = work_folder(trust_node, report, "fan")
    assert owners(folder) == {os.getuid()}
    assert special_bits(folder) == []
