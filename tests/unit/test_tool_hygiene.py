"""Work-folder hygiene, the tool's uid and limits, git upkeep: the pieces of docs/security.md#tools."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings

from executor.config import load_settings as load_executor_settings
from executor.errors import UserNotAllowed
from executor.hardening import check_docker_socket, container_limits, host_cpus, tool_user
from executor.wire.models import RunRequest
from orchestrator.config import load_settings
from orchestrator.datasets import Datasets, RepoSettings
from orchestrator.datasets._git import _execute_abortable, die_with_parent, lock_file_problem
from orchestrator.datasets.hygiene import (
    OutputRefused,
    check_output,
    hand_over,
    inspect_folder,
    points_outside,
)
from orchestrator.datasets.upkeep import clear_stale_locks, local_repositories
from orchestrator.domain.pipeline import Step
from orchestrator.domain.sizes import parse_size
from orchestrator.errors import ConfigError, MaoError
from tests.unit import trees

ROOT = os.getuid() == 0


# -- hygiene ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "outside"),
    [("a.txt", False), ("sub/../a.txt", False), ("/etc/passwd", True), ("../x", True), ("sub/../../x", True)],
)
def test_points_outside(tmp_path: Path, target: str, outside: bool) -> None:
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert points_outside(link, tmp_path) is outside


def test_a_link_through_a_link_to_the_folder_itself_is_outside(tmp_path: Path) -> None:
    (tmp_path / "d").symlink_to(".")
    (tmp_path / "x").symlink_to("d/../..")
    assert points_outside(tmp_path / "x", tmp_path)
    assert not points_outside(tmp_path / "d", tmp_path)


def test_inspection_clears_bits_removes_fifos_and_sockets_and_reports_the_rest(tmp_path: Path) -> None:
    binary = tmp_path / "x"
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(0o6755)
    (tmp_path / "d").mkdir(mode=0o2777)
    (tmp_path / "d").chmod(0o3777)
    os.mkfifo(tmp_path / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "d" / "sock"))
    server.close()
    (tmp_path / "out").symlink_to("/etc/passwd")
    (tmp_path / "in").symlink_to("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "f").write_text("hidden")
    locked.chmod(0)

    found = inspect_folder(tmp_path)

    assert sorted(found.removed) == ["d/sock", "pipe"]
    assert sorted(found.cleared_bits) == ["d", "x"]
    assert found.outside_links == ["out"] and found.devices == []
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777
    assert (locked / "f").read_text() == "hidden" and found.total_bytes == len("#!/bin/sh\n") + len("hidden")
    with pytest.raises(OutputRefused, match="out") as refused:
        check_output(found, None, "step s")
    assert "nothing was committed" in refused.value.message
    # Before a reset, a link out is removed instead.
    again = inspect_folder(tmp_path, remove_bad=True)
    assert again.removed == ["out"] and not (tmp_path / "out").is_symlink()


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_a_device_is_refused(tmp_path: Path) -> None:
    os.mknod(tmp_path / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    found = inspect_folder(tmp_path)
    assert found.devices == ["null"]
    with pytest.raises(OutputRefused, match="device nodes are not allowed: null"):
        check_output(found, None, "step s")


def test_output_size_bound(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100)
    found = inspect_folder(tmp_path)
    check_output(found, 100, "s")
    with pytest.raises(OutputRefused, match="101 bytes, more than MAO_STEP_MAX_OUTPUT=100"):
        (tmp_path / "b").write_bytes(b"y")
        check_output(inspect_folder(tmp_path), 100, "s")


@pytest.mark.skipif(not ROOT, reason="chown to another uid needs root")
def test_hand_over_and_reclaim_never_follow_links(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file")
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "f").write_text("out")
    (folder / "link").symlink_to(victim)
    hand_over(folder, (65534, 65534))
    assert {p.lstat().st_uid for p in [folder, *folder.iterdir()]} == {65534}
    assert victim.stat().st_uid == 0
    inspect_folder(folder, (0, 0), remove_bad=True)
    assert {p.lstat().st_uid for p in [folder, *folder.iterdir()]} == {0}


# -- the tool's uid and limits ------------------------------------------------------------------------


def _settings(tmp_path: Path, **env: str):
    return load_settings({"MAO_EXECUTOR_TOKEN": "t", "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1", **env})


def test_tool_user_is_decided_in_one_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, MAO_TOOL_UID="2000", MAO_TOOL_GID="3000")
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(os, "getgid", lambda: 0)
    assert settings.tool_user() == (2000, 3000)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1001)
    assert settings.tool_user() == (1000, 1001)
    assert _settings(tmp_path).tool_uid == 65534


def test_limit_settings(tmp_path: Path) -> None:
    settings = _settings(tmp_path, MAO_STEP_MEMORY="512m", MAO_STEP_CPUS="0.5", MAO_STEP_MAX_OUTPUT="2g")
    assert (settings.step_memory, settings.step_cpus, settings.step_max_output) == (
        512 * 2**20,
        0.5,
        2 * 2**30,
    )
    settings = _settings(tmp_path, MAO_STEP_MAX_FILES="5000", MAO_STEP_TMP_SIZE="64m")
    assert (settings.step_max_files, settings.step_tmp_size) == (5000, 64 * 2**20)
    assert (_settings(tmp_path).step_max_files, _settings(tmp_path).step_tmp_size) == (200_000, 256 * 2**20)
    with pytest.raises(ConfigError) as error:
        _settings(
            tmp_path,
            MAO_TOOL_UID="0",
            MAO_STEP_MEMORY="1k",
            MAO_STEP_MAX_OUTPUT="lots",
            MAO_STEP_MAX_FILES="0",
            MAO_STEP_TMP_SIZE="1k",
        )
    text = str(error.value)
    for name in ("MAO_TOOL_UID", "MAO_STEP_MEMORY", "MAO_STEP_MAX_OUTPUT", "MAO_STEP_MAX_FILES", "MAO_STEP_TMP_SIZE"):
        assert name in text, text
    assert parse_size("64M") == 64 * 2**20 and parse_size("10") == 10
    with pytest.raises(ValueError):
        parse_size("-1")


def test_executor_refuses_root_and_defaults_to_its_tool_uid() -> None:
    base = {"image": "busybox", "output_dir": "/tmp"}
    assert tool_user(RunRequest.model_validate(base), 65534, 65534) == "65534:65534"
    assert tool_user(RunRequest.model_validate({**base, "user": "1000"}), 1000, 1001) == "1000:1001"
    assert tool_user(RunRequest.model_validate({**base, "user": "1000:1000"}), 1000, 1000) == "1000:1000"
    for root in ("0", "0:0", "0:1000", "1000:0"):
        with pytest.raises(UserNotAllowed, match="never run as root"):
            tool_user(RunRequest.model_validate({**base, "user": root}), 1000, 1000)
    # Any other user is refused too (tests/unit/test_executor_confinement.py generates them).
    with pytest.raises(UserNotAllowed, match="only as 65534:65534"):
        tool_user(RunRequest.model_validate({**base, "user": "1000"}), 65534, 65534)
    with pytest.raises(ConfigError, match="MAO_TOOL_UID"):
        load_executor_settings({"MAO_EXECUTOR_TOKEN": "t", "MAO_TOOL_UID": "0"})


def test_container_limits() -> None:
    base = {"image": "busybox", "output_dir": "/tmp"}
    limits = container_limits(RunRequest.model_validate(base))
    log_config = limits.pop("log_config")
    assert limits == {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": 512,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={256 * 2**20},mode=1777"},
    }
    assert log_config.type == "json-file" and log_config.config == {"max-size": "16m", "max-file": "2"}
    opted = container_limits(RunRequest.model_validate({**base, "writable_root": True, "tmp_size": 2**20}))
    assert opted["read_only"] is False and "size=1048576," in opted["tmpfs"]["/tmp"]
    with pytest.raises(ValueError):
        RunRequest.model_validate({**base, "tmp_size": 1024})
    limits = container_limits(
        RunRequest.model_validate({**base, "memory": 64 * 2**20, "cpus": 1000.0, "pids": 64})
    )
    assert limits["mem_limit"] == limits["memswap_limit"] == 64 * 2**20 and limits["pids_limit"] == 64
    assert limits["nano_cpus"] == host_cpus() * 10**9  # capped to this host
    settings = load_executor_settings(
        {"MAO_EXECUTOR_TOKEN": "t", "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES": "ok:1"}
    )
    check_docker_socket(RunRequest.model_validate({**base, "image": "ok:1", "docker_socket": True}), settings)
    with pytest.raises(MaoError, match="may not get the Docker socket"):
        check_docker_socket(RunRequest.model_validate({**base, "docker_socket": True}), settings)


def test_step_types_are_strict_where_the_prototype_sent_json_types() -> None:
    base = {"name": "s", "tool": "t", "output_dataset": "d"}
    step = Step.model_validate(
        {**base, "env": {"N": 1, "B": False}, "timeout": 60, "memory": "1g", "cpus": 2}
    )
    assert step.env == {"N": "1", "B": "false"} and step.memory == 2**30 and step.timeout == 60.0
    for bad in ({"docker_socket": "yes"}, {"docker_socket": 1}, {"timeout": "60"}, {"cmd": ["a", 1]}):
        with pytest.raises(ValueError):
            Step.model_validate({**base, **bad})


# -- git ------------------------------------------------------------------------------------------------


def test_git_children_get_a_death_signal_prefix() -> None:
    prefix = die_with_parent()
    assert prefix[1:] == ["--pdeathsig", "KILL", "--"]
    assert subprocess.run([*prefix, "true"], check=False).returncode == 0


def test_abort_kills_the_process_at_once() -> None:
    abort = threading.Event()
    threading.Timer(0.2, abort.set).start()
    began = time.monotonic()
    status, _, err = _execute_abortable(["sh", "-c", "sleep 30"], {}, 60, abort)
    assert time.monotonic() - began < 10 and status != 0 and err.startswith("aborted:")


def test_lock_file_problem_names_the_file() -> None:
    stderr = (
        "fatal: Unable to create '/d/x.git/mao-index/s-n.lock': File exists.\n\nAnother git process seems"
    )
    message = lock_file_problem(stderr)
    assert message is not None and "/d/x.git/mao-index/s-n.lock" in message
    assert lock_file_problem("fatal: something else") is None


def test_stale_locks_are_cleared(tmp_path: Path) -> None:
    git_dir = tmp_path / "datasets" / "d.git"
    subprocess.run(["git", "init", "--bare", "-q", str(git_dir)], check=True)
    stale = [
        git_dir / "mao-index" / "b.lock",
        git_dir / "refs" / "heads" / "x.lock",
        git_dir / "packed-refs.lock",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    (git_dir / "objects" / "ab").mkdir()
    assert local_repositories(tmp_path) == [("d", git_dir)]
    assert sorted(clear_stale_locks(git_dir)) == sorted(stale)
    assert not any(p.exists() for p in stale) and (git_dir / "HEAD").is_file()


async def test_gc_waits_for_the_dataset_lock(tmp_path: Path) -> None:
    datasets = Datasets(tmp_path, git_name="N", git_email="n@example.org")
    subprocess.run(["git", "init", "--bare", "-q", str(tmp_path / "datasets" / "d.git")], check=True)
    order: list[str] = []

    def step_work(_repo: object) -> None:
        time.sleep(0.3)
        order.append("step")

    async def gc() -> None:
        await asyncio.sleep(0.05)
        await datasets.collect_garbage()
        order.append("gc")

    await asyncio.gather(datasets.run("d", "/m.git", step_work), gc())
    assert order == ["step", "gc"]
    assert await datasets.clear_stale_locks() == 0


# -- the ground-truth lock and a push under it ------------------------------------------------------------


class _FailingEtcd:
    """Grants a lease and the lock, then never manages to refresh it (etcd unreachable)."""

    async def grant_lease(self, ttl: int) -> int:
        return 7

    async def create_reading(
        self, key: str, value: object, lease: int, reads: tuple[str, ...] = ()
    ) -> tuple[bool, dict[str, object]]:
        return True, {}

    async def delete_putting(self, key: str, value: object, puts: dict[str, object]) -> bool:
        return True

    async def refresh_lease(self, lease: int) -> int:
        from orchestrator.errors import EtcdUnavailable

        raise EtcdUnavailable("etcd is unreachable")

    async def revoke_lease(self, lease: int) -> None:
        return None


async def test_a_lock_whose_lease_cannot_be_refreshed_stops_the_push_before_the_lease_ends() -> None:
    from orchestrator.federation.locks import Locks

    locks = Locks(_FailingEtcd(), "n1", ttl=4, wait=5)  # type: ignore[arg-type]
    began = time.monotonic()
    async with locks.dataset("d", "merge") as held:
        status, _, err = await asyncio.to_thread(
            _execute_abortable, ["sh", "-c", "sleep 30"], {}, 60, held.lost_event
        )
        stopped = time.monotonic() - began
    assert held.lost and err.startswith("aborted:") and status != 0
    # Killed before the lease's end (4 s after it was granted): 1 s before it, by the margin.
    assert stopped < 4


def test_a_branch_with_a_link_out_is_refused_at_checkout(tmp_path: Path) -> None:
    from orchestrator.datasets import DatasetRepo
    from orchestrator.datasets.hygiene import OutputRefused

    # Another instance committed a symlink to /etc/passwd into ground-truth.
    master, clone = tmp_path / "master.git", tmp_path / "clone"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=ground-truth", str(master)], check=True)
    subprocess.run(["git", "init", "-q", "--initial-branch=ground-truth", str(clone)], check=True)
    (clone / "ok.txt").write_text("ok")
    (clone / "evil").symlink_to("/etc/passwd")
    git = ["git", "-C", str(clone), "-c", "user.name=x", "-c", "user.email=x@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "links"], check=True)
    subprocess.run([*git, "push", "-q", str(master), "ground-truth"], check=True)

    repo = DatasetRepo(
        tmp_path / "node",
        "ds",
        str(master),
        RepoSettings(git_name="N", git_email="n@example.org"),
    )
    repo.sync()
    with pytest.raises(OutputRefused, match="evil"):
        repo.snapshot(tmp_path / "input")
    with pytest.raises(OutputRefused, match="evil"):
        repo.prepare_worktree("s-n1")


# A link whose chain runs through a link out is out too, even when the walk meets (and, on a reset,
# removes) the link out first: without it the second one dangles and would look inside.
A_CHAIN_THROUGH_A_LINK_OUT = [
    trees.Entry(("a",), "link", target=".."),
    trees.Entry(("b", "a"), "link", target="../a"),
]


def test_a_chain_through_a_link_out_is_out_in_both_modes(tmp_path: Path) -> None:
    for remove_bad in (False, True):
        root = tmp_path / str(remove_bad)
        root.mkdir()
        trees.build(root, A_CHAIN_THROUGH_A_LINK_OUT)
        found = inspect_folder(root, remove_bad=remove_bad)
        assert sorted(found.removed if remove_bad else found.outside_links) == ["a", "b/a"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees.trees)
@example(tree=A_CHAIN_THROUGH_A_LINK_OUT)
def test_an_inspection_reports_every_link_out_judged_on_the_tree_as_left(
    tmp_path_factory: pytest.TempPathFactory, tree
) -> None:
    root = tmp_path_factory.mktemp("tree")
    trees.build(root, tree)
    before = trees.listing(root)
    outside = {rel for rel, (kind, _, _) in before.items() if kind == "link" and points_outside(root / rel, root)}
    found = inspect_folder(root)
    assert sorted(found.outside_links) == sorted(outside)
    assert set(trees.listing(root)) == set(before)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees.trees)
@example(tree=A_CHAIN_THROUGH_A_LINK_OUT)
def test_a_reset_removes_every_link_out_and_keeps_the_rest(tmp_path_factory: pytest.TempPathFactory, tree) -> None:
    root = tmp_path_factory.mktemp("tree")
    trees.build(root, tree)
    before = trees.listing(root)
    outside = {rel for rel, (kind, _, _) in before.items() if kind == "link" and points_outside(root / rel, root)}
    found = inspect_folder(root, remove_bad=True)
    after = trees.listing(root)
    assert sorted(found.removed) == sorted(outside)
    assert set(after) == set(before) - outside
    assert not [rel for rel, (kind, _, _) in after.items() if kind == "link" and points_outside(root / rel, root)]
