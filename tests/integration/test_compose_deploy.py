"""The deployment users are told to run, run for real: images from scripts/images.sh (no registry),
two instances written by ``maoctl instance install`` from answers files and started with ``maoctl
instance up`` on this host (every port distinct), joined through ``maoctl federation add-member``
(its join bundle, issued with A's federation CA, is B's ``join_bundle`` answer; etcd runs over TLS).
Both are a single-host federation (``single_host: true``): A on 127.0.0.2, B on 127.0.0.3, so every
address the stacks listen on and every request of the test stays on loopback.

Checks both stacks healthy, each container's environment holding only its own secrets (``docker
inspect``), both instances in the member list, a tool registered on A seen on B, and a pipeline run
inside B's stack (its executor container starting a busybox tool through the host's
Docker engine) with its output merged on ``ground-truth``. Then ``maoctl instance down`` and cleanup.

Everything this test creates is named ``maotest-...`` (images, compose projects, containers). The
images are kept afterwards on purpose: they are the cache that makes the next run fast (scripts/images.sh
skips an image whose inputs did not change). Marker ``compose``; ``-m "not compose"`` skips it.

Compose flavour: whatever ``maoctl`` picks (``docker compose`` v2, else Debian's ``docker-compose``
v1); ``MAO_COMPOSE=docker-compose`` forces v1.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctl.env_files import parse_env
from ctl.stack import compose_command
from tests import servers
from tests.api import Api
from tests.ctl_helpers import REPO_ROOT, maoctl_process

pytestmark = pytest.mark.compose

PREFIX = "maotest-"
TOOL_IMAGE = f"{PREFIX}busybox:compose"
APP = "/usr/src/app"


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_ports(count: int, taken: set[int]) -> list[int]:
    """``count`` free ports; etcd's come in (client, client + 1) pairs, so all are picked as pairs."""
    found: list[int] = []
    while len(found) < count:
        port = random.randrange(20000, 40000, 2)
        if {port, port + 1} & (taken | set(found)) or not (_free(port) and _free(port + 1)):
            continue
        found += [port, port + 1]
    return found[:count]


def git(repo: str, *args: str) -> str:
    # The repositories belong to the orchestrator's user (uid 10001), not to us.
    return subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", repo, *args], capture_output=True, text=True, check=True
    ).stdout


def poll(what: str, check: Any, timeout: float = 180, interval: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not true within {timeout:.0f} s (last: {last!r})")


class Instance:
    def __init__(self, name: str, directory: Path, ports: list[int], ip: str) -> None:
        self.name, self.directory, self.ip = name, directory, ip
        self.etcd_client_port, self.etcd_peer_port, self.api_port, self.executor_port, self.postgres_port = (
            ports
        )

    def answers(self, images: dict[str, str], **extra: Any) -> Path:
        path = self.directory.parent / f"{self.name}-answers.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "directory": str(self.directory),
                    "name": self.name,
                    "ip": self.ip,
                    "single_host": True,
                    "git_email": f"ops@{self.name}.example.org",
                    "api_port": self.api_port,
                    "postgres_port": self.postgres_port,
                    "executor_port": self.executor_port,
                    "etcd_client_port": self.etcd_client_port,
                    "etcd_peer_port": self.etcd_peer_port,
                    "images": images,
                    **extra,
                }
            )
        )
        return path

    @property
    def token(self) -> str:
        return parse_env((self.directory / "mao.env").read_text())["MAO_API_TOKEN"]

    @property
    def api(self) -> Api:
        return Api(f"http://{self.ip}:{self.api_port}", token=self.token, timeout=180)

    def maoctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {"MAO_URL": f"http://{self.ip}:{self.api_port}", "MAO_API_TOKEN": self.token}
        return maoctl_process(*args, env=env, timeout=timeout)


def run_ok(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = maoctl_process(*args, timeout=timeout, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, f"maoctl {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def logs(instance: Instance) -> str:
    done = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={instance.name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    parts = []
    for container in done.stdout.split():
        tail = subprocess.run(["docker", "logs", "--tail", "40", container], capture_output=True, text=True)
        parts.append(f"--- {container}\n{tail.stdout}{tail.stderr}")
    return "\n".join(parts)


def remove_project(instance: Instance) -> None:
    """``down``, then whatever it left (a failed start): only this project's containers."""
    if (instance.directory / "docker-compose.yaml").exists():
        maoctl_process("instance", "down", "--dir", str(instance.directory), timeout=300)
    left = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={instance.name}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if left:
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True, check=False)


@pytest.fixture(scope="module")
def stack_images(docker_engine, request: pytest.FixtureRequest) -> dict[str, str]:
    """scripts/images.sh with the maotest- prefix (cold: minutes; warm: seconds), and the tool image."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "images.sh")],
        env={**os.environ, "MAO_IMAGE_PREFIX": PREFIX},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, f"scripts/images.sh failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    print(f"\nscripts/images.sh took {time.monotonic() - started:.0f} s\n{done.stdout}")
    servers.build_busybox_image(TOOL_IMAGE, client=docker_engine)
    env = parse_env(done.stdout)
    return {
        service: env[f"MAO_{service.upper()}_IMAGE"]
        for service in ("orchestrator", "executor", "etcd", "postgres")
    }


@pytest.fixture
def two_dirs(tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    ports = free_ports(10, set())
    a = Instance(f"{PREFIX}a{os.getpid()}", tmp_path / "a", ports[:5], "127.0.0.2")
    b = Instance(f"{PREFIX}b{os.getpid()}", tmp_path / "b", ports[5:], "127.0.0.3")
    yield a, b
    for instance in (b, a):
        remove_project(instance)
    shutil.rmtree(tmp_path, ignore_errors=True)


def add_member(a: Instance, b: Instance) -> tuple[Path, str]:
    """``maoctl federation add-member`` on A, with A's federation CA: B's join bundle (its certificates
    and ETCD_INITIAL_CLUSTER, the file B's installer takes) and the ETCD_INITIAL_CLUSTER it holds. A
    lone etcd member may take a second one (trust-api), so this works on a one-member federation."""
    peer = f"https://{b.ip}:{b.etcd_peer_port}"
    bundle = b.directory.parent / f"{b.name}-join.json"
    done = a.maoctl(
        "federation", "add-member", "--name", b.name, "--peer-url", peer,
        "--ca-dir", str(a.directory / "ca"), "--bundle", str(bundle), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert Path(result["join_bundle"]) == bundle.resolve() and stat.S_IMODE(bundle.stat().st_mode) == 0o600
    return bundle, str(result["ETCD_INITIAL_CLUSTER"])


def test_two_instances_from_answers_files_form_a_federation(
    stack_images: dict[str, str], two_dirs: tuple[Instance, Instance]
) -> None:
    a, b = two_dirs
    started = time.monotonic()

    run_ok("instance", "install", "--answers", str(a.answers(stack_images)))
    print(f"(compose: {' '.join(compose_command())})")
    try:
        run_ok("instance", "up", "--dir", str(a.directory), "--timeout", "600")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(a)}") from None
    assert stat_owner(a.directory / "data") == (10001, 10001)
    health = a.api.ok(a.api.get("/health"))
    assert health["status"] == "ok" and health["instance"] == a.name, health

    # etcd over TLS: the orchestrator (uid 10001) owns what it reads of pki/, keys stay 0600.
    pki = a.directory / "pki"
    assert stat_owner(pki / "client.key") == (10001, 10001)
    assert stat.S_IMODE((pki / "client.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((pki / "etcd.key").stat().st_mode) == 0o600
    assert stat_owner(pki / "etcd.key") != (10001, 10001)

    bundle, cluster = add_member(a, b)
    assert f"{b.name}=https://{b.ip}:{b.etcd_peer_port}" in cluster
    run_ok(
        "instance", "install", "--answers",
        str(b.answers(stack_images, join=True, join_bundle=str(bundle))),
    )  # fmt: skip
    assert stat_owner(b.directory / "pki" / "client.key") == (10001, 10001)
    try:
        run_ok("instance", "up", "--dir", str(b.directory), "--timeout", "600")
        for instance in (a, b):
            status = json.loads(
                run_ok("instance", "status", "--dir", str(instance.directory), "--json").stdout
            )
            assert status["ready"] and len(status["services"]) == 4, status
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(a)}\n{logs(b)}") from None
    print(f"\ntwo instances up and joined in {time.monotonic() - started:.0f} s")
    checks = time.monotonic()
    for instance in (a, b):
        assert_only_own_secrets(instance)

    for instance in (a, b):
        assert instance.maoctl("instance", "status").returncode == 0
    members = poll(
        "both instances listed on A",
        lambda: (
            (m := a.api.ok(a.api.get("/federation/members")))
            and {i["name"] for i in m["instances"]} >= {a.name, b.name}
            and m
        ),
    )
    assert {m["name"] for m in members["etcd"]} == {a.name, b.name}
    assert all(m["healthy"] for m in members["etcd"]), members

    # A tool registered on A is seen on B (the shared etcd).
    tool = f"{PREFIX}tool"
    a.api.tool(tool, image=TOOL_IMAGE)
    poll("the tool on B", lambda: b.api.get(f"/registry/tools/{tool}").status_code == 200, timeout=60)

    # A pipeline run inside B's stack: the executor container runs the tool; the output lands on ground-truth.
    dataset = f"{PREFIX}out"
    repo = b.api.local_dataset(dataset)
    step = {
        "name": "write",
        "tool": tool,
        "input_dataset": None,
        "output_dataset": dataset,
        "env": None,
        "cmd": ["sh", "-c", f"echo hello from {b.name} > {APP}/data/hello.txt"],
        "docker_socket": False,
    }
    b.api.ok(b.api.post("/pipeline/init", {"name": f"{PREFIX}pipe", "steps": [step]}))
    run = b.api.run(f"{PREFIX}pipe")
    assert run["status"] == "succeeded", run
    assert git(repo, "show", "ground-truth:hello.txt").strip() == f"hello from {b.name}"

    print(f"members, tool and pipeline checked in {time.monotonic() - checks:.0f} s")
    stopping = time.monotonic()
    for instance in (b, a):
        run_ok("instance", "down", "--dir", str(instance.directory), timeout=300)
        status = maoctl_process("instance", "status", "--dir", str(instance.directory), "--json")
        assert status.returncode == 1 and json.loads(status.stdout)["services"] == []
    print(f"both stacks down in {time.monotonic() - stopping:.0f} s")


def assert_only_own_secrets(instance: Instance) -> None:
    """Each running container's environment (``docker inspect``) holds the secrets it needs only:
    the API token the orchestrator alone, the database password PostgreSQL (and the orchestrator's
    URL), the executor token the executor and the orchestrator; etcd none. The files are 0600."""
    files = {
        n: parse_env((instance.directory / n).read_text())
        for n in ("mao.env", "executor.env", "postgres.env")
    }
    for name in files:
        assert stat.S_IMODE((instance.directory / name).stat().st_mode) == 0o600, name
    api_token, executor_token = files["mao.env"]["MAO_API_TOKEN"], files["executor.env"]["MAO_EXECUTOR_TOKEN"]
    password = files["postgres.env"]["POSTGRES_PASSWORD"]
    holders = {
        "orchestrator": {api_token, executor_token, password},
        "executor": {executor_token},
        "postgres": {password},
        "etcd": set(),
    }
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={instance.name}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    seen = set()
    for container in ids:
        info = json.loads(
            subprocess.run(
                ["docker", "inspect", container], capture_output=True, text=True, check=True
            ).stdout
        )[0]
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        environment = " ".join(info["Config"]["Env"] or [])
        held = {secret for secret in (api_token, executor_token, password) if secret in environment}
        assert held == holders[service], (service, sorted(v[:4] for v in held))
        seen.add(service)
    assert seen == set(holders), seen


def stat_owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid
