"""The executor against the real Docker engine, through a real ``python -m executor`` subprocess.

Self-contained on purpose (module-scoped fixtures below, not the shared harness in tests/servers/) so it
can later be moved into that harness without untangling anything. No test pulls from a registry: the
image is built locally from the host's busybox-static.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "mao-test-busybox:latest"
SOCKET_IMAGE = "mao-test-busybox-socket:latest"  # same image, second tag: the only one allowed the socket
IMAGE_LABEL = ("mao.test.image", "busybox-v1")
DOCKER_SOCKET = "/var/run/docker.sock"
# The one user these executors run tools as (MAO_TOOL_UID:MAO_TOOL_GID); the output folders belong to it.
TOOL_USER = "1234:1234"
STARTUP_TIMEOUT = 20.0


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _containers(client: docker.DockerClient, *labels: str) -> list[Any]:
    return client.containers.list(all=True, ignore_removed=True, filters={"label": list(labels)})


@dataclass
class Executor:
    url: str
    token: str
    instance: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def run(self, body: Mapping[str, Any], timeout: float = 30.0) -> requests.Response:
        return requests.post(f"{self.url}/run", json=dict(body), headers=self.headers, timeout=timeout)

    def health(self) -> requests.Response:
        return requests.get(f"{self.url}/health", headers=self.headers, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def start_executor(log_dir: Path, instance: str, extra_env: Mapping[str, str] | None = None) -> Executor:
    """Start ``python -m executor`` on a free port and wait until /health answers (any status).

    Plain TCP on loopback, chosen explicitly (MAO_EXECUTOR_LISTEN=tcp): this module tests the HTTP API
    itself, and the tests-only mode with it; the default Unix socket is what the shared harness uses."""
    token = secrets.token_urlsafe(24)
    port = _free_port()
    env = {
        **os.environ,
        "MAO_EXECUTOR_TOKEN": token,
        "MAO_EXECUTOR_LISTEN": "tcp",
        "MAO_EXECUTOR_HOST": "127.0.0.1",
        "MAO_EXECUTOR_PORT": str(port),
        "MAO_EXECUTOR_DATA_ROOT": tempfile.gettempdir(),
        "MAO_TOOL_UID": TOOL_USER.split(":")[0],
        "MAO_TOOL_GID": TOOL_USER.split(":")[1],
        "MAO_INSTANCE_NAME": instance,
        "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES": SOCKET_IMAGE,
        "MAO_EXECUTOR_DOCKER_SOCKET": DOCKER_SOCKET,
        "MAO_LOG_LEVEL": "INFO",
        **(extra_env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{instance}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "executor"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    executor = Executor(f"http://127.0.0.1:{port}", token, instance, process, log_path)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"executor exited with {process.returncode}:\n{executor.log()}")
        try:
            executor.health()
            return True
        except requests.ConnectionError:
            return False

    try:
        _wait_until(answers, STARTUP_TIMEOUT, f"executor {instance} to answer /health")
    except BaseException:
        executor.stop()
        raise
    return executor


def _busybox_tar() -> bytes:
    """A root file system holding only /bin/busybox (from busybox-static) and its applet symlinks."""
    busybox = shutil.which("busybox") or "/usr/bin/busybox"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------
# module fixtures
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[docker.DockerClient]:
    """A client on a running Docker engine; dockerd is started here (and stopped after) when none answers."""

    def connect() -> docker.DockerClient | None:
        try:
            client = docker.from_env(timeout=60)
            client.ping()
            return client
        except docker.errors.DockerException:
            return None
        except requests.RequestException:
            return None

    dockerd: subprocess.Popen[bytes] | None = None
    client = connect()
    if client is None:
        log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        with open(log_path, "wb") as log_file:
            dockerd = subprocess.Popen(
                ["dockerd", "--iptables=false", "--bridge=none"], stdout=log_file, stderr=subprocess.STDOUT
            )
        client = _wait_until(connect, 60, "dockerd to answer", interval=0.5)
    try:
        yield client
    finally:
        client.close()
        if dockerd is not None:
            dockerd.terminate()
            dockerd.wait(timeout=30)


@pytest.fixture(scope="module")
def test_image(docker_client: docker.DockerClient) -> str:
    """IMAGE (and SOCKET_IMAGE, the same image) built offline from the host's busybox, if not there yet."""
    try:
        image = docker_client.images.get(IMAGE)
        current = image.labels.get(IMAGE_LABEL[0]) == IMAGE_LABEL[1]
    except docker.errors.ImageNotFound:
        current = False
    if not current:
        repository, tag = IMAGE.split(":")
        docker_client.api.import_image_from_data(
            _busybox_tar(),
            repository=repository,
            tag=tag,
            changes=[
                "ENV PATH=/bin",
                'CMD ["sh", "-c", "echo image-default-cmd"]',
                f"LABEL {IMAGE_LABEL[0]}={IMAGE_LABEL[1]}",
            ],
        )
    repository, tag = SOCKET_IMAGE.split(":")
    docker_client.images.get(IMAGE).tag(repository, tag)
    return IMAGE


@pytest.fixture(scope="module")
def executor_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("executor-logs")


@pytest.fixture(scope="module")
def executor(docker_client: docker.DockerClient, test_image: str, executor_logs: Path) -> Iterator[Executor]:
    """One executor (default pull policy 'missing') with an instance name unique to this module run."""
    instance = f"pytest-exec-{uuid.uuid4().hex[:8]}"
    service = start_executor(executor_logs, instance)
    try:
        yield service
    finally:
        service.stop()
        leftovers = _containers(docker_client, "mao.managed=true", f"mao.instance={instance}")
        for container in leftovers:
            container.remove(force=True)
        assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(input_dir, output_dir); output owned by 1234:1234 so a container running as that user can write."""
    input_dir, output_dir = tmp_path / "input", tmp_path / "output"
    input_dir.mkdir()
    output_dir.mkdir()
    os.chown(output_dir, 1234, 1234)
    return input_dir, output_dir


def _body(output_dir: Path, **fields: Any) -> dict[str, Any]:
    return {"image": IMAGE, "output_dir": str(output_dir), **fields}


# ----------------------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------------------


def test_every_route_requires_the_token(executor: Executor) -> None:
    attempts = [
        ("GET", "/health", {}),
        ("GET", "/health", {"Authorization": "Bearer wrong-token"}),
        ("GET", "/health", {"Authorization": f"Basic {executor.token}"}),
        ("POST", "/run", {"Authorization": "Bearer "}),
        ("GET", "/no-such-route", {}),
    ]
    for method, path, headers in attempts:
        response = requests.request(method, executor.url + path, headers=headers, json={}, timeout=10)
        assert response.status_code == 401, (method, path, headers, response.text)
        assert response.json()["error"] == "unauthorized"
        assert "Bearer" in response.json()["message"]

    health = executor.health()
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "docker": "ok", "instance": executor.instance, "running": 0}


def test_run_as_user_writes_output_and_cannot_write_input(
    executor: Executor, dirs: tuple[Path, Path]
) -> None:
    input_dir, output_dir = dirs
    (input_dir / "in.txt").write_text("payload from the orchestrator\n")
    # World-writable on the host: only the read-only mount may stop the container writing here.
    input_dir.chmod(0o777)
    script = (
        "cat /usr/src/app/input/in.txt > /usr/src/app/data/out.txt && "
        "touch /usr/src/app/input/new 2>&1; "
        'echo "HOME=$HOME"; id -u; id -g'
    )
    response = executor.run(
        _body(output_dir, input_dir=str(input_dir), user="1234:1234", cmd=["sh", "-c", script])
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {
        "exit_code", "timed_out", "stalled", "cancelled", "image_id", "started_at", "ended_at",
        "duration", "log_tail", "container",
    }  # fmt: skip
    assert result["exit_code"] == 0 and result["timed_out"] is False
    assert result["image_id"].startswith("sha256:")
    started, ended = datetime.fromisoformat(result["started_at"]), datetime.fromisoformat(result["ended_at"])
    assert started.utcoffset() is not None and started.utcoffset().total_seconds() == 0
    assert started <= ended and isinstance(result["duration"], float) and result["duration"] >= 0
    assert result["container"].startswith(f"mao-{executor.instance}-")

    out = output_dir / "out.txt"
    assert out.read_text() == "payload from the orchestrator\n"
    assert (os.stat(out).st_uid, os.stat(out).st_gid) == (1234, 1234)
    assert "Read-only file system" in result["log_tail"]
    assert not (input_dir / "new").exists()
    assert result["log_tail"].splitlines()[-3:] == ["HOME=/tmp", "1234", "1234"]


def test_env_and_cmd_reach_the_container_and_env_values_are_not_logged(
    executor: Executor, dirs: tuple[Path, Path]
) -> None:
    _, output_dir = dirs
    secret = f"s3cret-{secrets.token_hex(8)}"
    response = executor.run(
        _body(
            output_dir,
            cmd=[
                "sh",
                "-c",
                'echo "$GREETING|$HOME|${#API_KEY}"; test -e /var/run/docker.sock || echo no-socket',
            ],
            env={"GREETING": "hello world", "HOME": "/custom", "API_KEY": secret},
            user="1234:1234",
        )
    )
    assert response.status_code == 200, response.text
    assert response.json()["log_tail"] == f"hello world|/custom|{len(secret)}\nno-socket\n"
    assert secret not in executor.log()

    # cmd null: the image's own CMD runs.
    default = executor.run(_body(output_dir, cmd=None))
    assert default.status_code == 200, default.text
    assert default.json()["log_tail"] == "image-default-cmd\n"
    # cmd []: the prototype's way of saying the same.
    empty = executor.run(_body(output_dir, cmd=[]))
    assert empty.status_code == 200, empty.text
    assert empty.json()["log_tail"] == "image-default-cmd\n"


def test_nonzero_exit_code_is_a_result_not_an_error(executor: Executor, dirs: tuple[Path, Path]) -> None:
    _, output_dir = dirs
    response = executor.run(_body(output_dir, cmd=["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7"]))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["exit_code"] == 7 and result["timed_out"] is False
    assert "to-stdout" in result["log_tail"] and "to-stderr" in result["log_tail"]


def test_log_tail_is_limited_to_log_lines_and_64_kib(executor: Executor, dirs: tuple[Path, Path]) -> None:
    _, output_dir = dirs
    ten = executor.run(_body(output_dir, cmd=["seq", "1", "500"], log_lines=10)).json()
    assert ten["log_tail"].splitlines() == [str(n) for n in range(491, 501)]

    default = executor.run(_body(output_dir, cmd=["seq", "1", "500"])).json()
    assert default["log_tail"].splitlines() == [str(n) for n in range(301, 501)]

    # 2000 lines of 100 bytes = 200 KB: the line limit allows all of it, the byte cap must not.
    script = "i=0; while [ $i -lt 2000 ]; do printf '%099d\\n' $i; i=$((i+1)); done"
    big = executor.run(_body(output_dir, cmd=["sh", "-c", script], log_lines=10000)).json()
    assert big["exit_code"] == 0
    assert 60 * 1024 < len(big["log_tail"].encode()) <= 64 * 1024
    assert big["log_tail"].endswith(f"{1999:099d}\n")


def test_timeout_kills_and_removes_the_container(
    executor: Executor, docker_client: docker.DockerClient, dirs: tuple[Path, Path]
) -> None:
    _, output_dir = dirs
    marker = uuid.uuid4().hex
    began = time.monotonic()
    response = executor.run(
        _body(
            output_dir,
            cmd=["sh", "-c", "echo before-sleep; sleep 30"],
            timeout=1,
            labels={"mao.test": marker},
        )
    )
    elapsed = time.monotonic() - began
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["timed_out"] is True and result["exit_code"] is None
    assert "before-sleep" in result["log_tail"]
    assert elapsed < 6, f"a 1 s timeout took {elapsed:.1f} s to answer"
    assert _containers(docker_client, f"mao.test={marker}") == []


def test_missing_image_is_404_fast_when_the_pull_fails(executor: Executor, dirs: tuple[Path, Path]) -> None:
    # Default policy 'missing': a pull is attempted, and no registry answers here.
    _, output_dir = dirs
    began = time.monotonic()
    response = executor.run(_body(output_dir, image="mao-test-no-such-image:latest"))
    assert time.monotonic() - began < 15
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "image_not_found"
    assert "mao-test-no-such-image:latest" in response.json()["message"]


def test_pull_never_and_startup_cleanup_of_own_leftovers(
    docker_client: docker.DockerClient, test_image: str, executor_logs: Path, tmp_path: Path
) -> None:
    instance = f"pytest-never-{uuid.uuid4().hex[:8]}"
    other = f"pytest-other-{uuid.uuid4().hex[:8]}"
    # As if an earlier executor of this instance had crashed mid-run; plus one of another executor.
    ours = docker_client.containers.create(
        test_image, ["sleep", "300"], labels={"mao.managed": "true", "mao.instance": instance}
    )
    theirs = docker_client.containers.create(
        test_image, ["sleep", "300"], labels={"mao.managed": "true", "mao.instance": other}
    )
    service = start_executor(executor_logs, instance, {"MAO_EXECUTOR_PULL": "never"})
    try:
        assert _containers(docker_client, f"mao.instance={instance}") == []
        assert [c.id for c in _containers(docker_client, f"mao.instance={other}")] == [theirs.id]
        assert ours.name in service.log() and "leftover" in service.log()

        began = time.monotonic()
        response = service.run(_body(tmp_path, image="mao-test-no-such-image:latest"))
        assert time.monotonic() - began < 5
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "image_not_found"
        assert "MAO_EXECUTOR_PULL=never" in response.json()["message"]
        assert "Pulling" not in service.log()
    finally:
        assert service.stop() == 0
        theirs.remove(force=True)
        try:
            ours.remove(force=True)
        except docker.errors.NotFound:
            pass


def test_docker_socket_only_for_allow_listed_images(executor: Executor, dirs: tuple[Path, Path]) -> None:
    _, output_dir = dirs
    refused = executor.run(_body(output_dir, docker_socket=True, cmd=["true"]))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "docker_socket_not_allowed"
    assert "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES" in refused.json()["message"]

    script = "test -S /var/run/docker.sock && echo socket-present; id -G"
    allowed = executor.run(
        _body(output_dir, image=SOCKET_IMAGE, docker_socket=True, user="1234:1234", cmd=["sh", "-c", script])
    )
    assert allowed.status_code == 200, allowed.text
    lines = allowed.json()["log_tail"].splitlines()
    assert lines[0] == "socket-present"
    # A non-root user also gets the socket's group, or it could not use the socket.
    assert str(os.stat(DOCKER_SOCKET).st_gid) in lines[1].split()


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("relative output_dir", {"output_dir": "relative/path"}, "output_dir"),
    ("missing output_dir on host", {"output_dir": f"{tempfile.gettempdir()}/nonexistent/mao-test"}, "output_dir"),
    ("relative input_dir", {"input_dir": "in"}, "input_dir"),
    ("bad env key", {"env": {"1BAD": "x"}}, "env"),
    ("env key with '='", {"env": {"A=B": "x"}}, "env"),
    ("env value not a string", {"env": {"A": 1}}, "env.A"),
    ("cmd not a list", {"cmd": "echo hi"}, "cmd"),
    ("cmd item not a string", {"cmd": ["echo", 1]}, "cmd.1"),
    ("negative timeout", {"timeout": -1}, "timeout"),
    ("zero timeout", {"timeout": 0}, "timeout"),
    ("timeout over 7 days", {"timeout": 7 * 86400 + 1}, "timeout"),
    ("timeout as string", {"timeout": "60"}, "timeout"),
    ("missing image", {"image": None}, "image"),
    ("image with leading dash", {"image": "-v"}, "image"),
    ("image with whitespace", {"image": "busybox latest"}, "image"),
    ("user not numeric", {"user": "root"}, "user"),
    ("user with extra part", {"user": "1:2:3"}, "user"),
    ("name with leading dash", {"name": "-x"}, "name"),
    ("name with slash", {"name": "a/b"}, "name"),
    ("log_lines zero", {"log_lines": 0}, "log_lines"),
    ("log_lines too many", {"log_lines": 10001}, "log_lines"),
    ("reserved label", {"labels": {"mao.instance": "someone-else"}}, "labels"),
    ("docker_socket not a bool", {"docker_socket": "yes"}, "docker_socket"),
    ("unknown field (rejected)", {"timout": 5}, "timout"),
]


@pytest.mark.parametrize(("case", "change", "field"), BAD_BODIES, ids=[case for case, _, _ in BAD_BODIES])
def test_bad_input_is_400_naming_the_field(
    executor: Executor, dirs: tuple[Path, Path], case: str, change: dict[str, Any], field: str
) -> None:
    _, output_dir = dirs
    body = _body(output_dir, cmd=["true"])
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    response = executor.run(body)
    assert response.status_code == 400, (case, response.text)
    assert response.json()["error"] == "bad_request"
    assert field in response.json()["message"], (case, response.json()["message"])


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b"", b"\xff\xfe", b"null", b"[" * 100_000 + b"]" * 100_000],
    ids=["broken", "array", "empty", "not-utf8", "null", "deeply-nested"],
)
def test_body_that_is_not_a_json_object_is_400(executor: Executor, raw: bytes) -> None:
    response = requests.post(
        f"{executor.url}/run",
        data=raw,
        headers={**executor.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"


def test_oversized_body_is_413_json(executor: Executor) -> None:
    response = requests.post(
        f"{executor.url}/run", data=b"x" * (2 * 1024 * 1024), headers=executor.headers, timeout=10
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_command_missing_in_image_is_400_and_leaves_nothing(
    executor: Executor, docker_client: docker.DockerClient, dirs: tuple[Path, Path]
) -> None:
    _, output_dir = dirs
    marker = uuid.uuid4().hex
    response = executor.run(_body(output_dir, cmd=["no-such-program"], labels={"mao.test": marker}))
    assert response.status_code == 400, response.text
    assert "no-such-program" in response.json()["message"]
    assert _containers(docker_client, f"mao.test={marker}") == []


def test_container_name_in_use_is_409_and_the_other_container_survives(
    executor: Executor, docker_client: docker.DockerClient, test_image: str, dirs: tuple[Path, Path]
) -> None:
    _, output_dir = dirs
    name = f"mao-test-taken-{uuid.uuid4().hex[:8]}"
    existing = docker_client.containers.create(test_image, ["true"], name=name)
    try:
        response = executor.run(_body(output_dir, cmd=["true"], name=name))
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "container_name_in_use"
        existing.reload()  # raises NotFound if the executor had removed someone else's container
    finally:
        existing.remove(force=True)

    # The name is free again: the run takes it.
    response = executor.run(_body(output_dir, cmd=["true"], name=name))
    assert response.status_code == 200 and response.json()["container"] == name


def test_runs_proceed_in_parallel(executor: Executor, dirs: tuple[Path, Path]) -> None:
    _, output_dir = dirs
    results: list[requests.Response] = []

    def one() -> None:
        results.append(executor.run(_body(output_dir, cmd=["sleep", "2"])))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r.status_code for r in results] == [200, 200]
    assert all(r.json()["exit_code"] == 0 for r in results)
    # Parallel means the two containers' lives overlap (a slow machine stretches both, not the overlap).
    spans = sorted(
        (datetime.fromisoformat(r.json()["started_at"]), datetime.fromisoformat(r.json()["ended_at"]))
        for r in results
    )
    assert spans[1][0] < spans[0][1], f"the second run started after the first ended: {spans}"


def test_client_disconnect_kills_and_removes_the_container(
    executor: Executor, docker_client: docker.DockerClient, dirs: tuple[Path, Path]
) -> None:
    _, output_dir = dirs
    marker = uuid.uuid4().hex
    body = json.dumps(_body(output_dir, cmd=["sleep", "60"], labels={"mao.test": marker}))
    port = int(executor.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "POST", "/run", body=body, headers={**executor.headers, "Content-Type": "application/json"}
    )
    try:
        running = _wait_until(
            lambda: [c for c in _containers(docker_client, f"mao.test={marker}") if c.status == "running"],
            15,
            "the container to start",
        )
        assert len(running) == 1
        assert executor.health().json()["running"] >= 1
    finally:
        connection.close()
    _wait_until(
        lambda: not _containers(docker_client, f"mao.test={marker}"), 15, "the container to be removed"
    )
    assert "is being removed: the client went away" in executor.log()


def test_health_is_503_when_docker_does_not_answer(executor_logs: Path, tmp_path: Path) -> None:
    instance = f"pytest-nodocker-{uuid.uuid4().hex[:8]}"
    service = start_executor(executor_logs, instance, {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    try:
        health = service.health()
        assert health.status_code == 503, health.text
        assert health.json()["error"] == "docker_unavailable"
        run = service.run(_body(tmp_path, cmd=["true"]))
        assert run.status_code == 503, run.text
        assert run.json()["error"] == "docker_unavailable"
        assert "Traceback" not in service.log()
    finally:
        assert service.stop() == 0


def test_no_container_of_this_instance_remains(
    executor: Executor, docker_client: docker.DockerClient
) -> None:
    left = _containers(docker_client, "mao.managed=true", f"mao.instance={executor.instance}")
    assert left == [], [c.name for c in left]
    assert executor.health().json()["running"] == 0


def test_containers_run_unprivileged_and_bounded(
    executor: Executor, dirs: tuple[Path, Path], docker_client: docker.DockerClient
) -> None:
    """No root, no capabilities, no privilege gain, and the limits of the request (executor.hardening)."""
    _, output_dir = dirs
    tag = uuid.uuid4().hex
    script = (
        "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; "
        "chown 0 /usr/src/app/data 2>/dev/null && echo chown-worked || echo chown-refused; sleep 2"
    )
    body = _body(
        output_dir,
        user="1234:1234",
        cmd=["sh", "-c", script],
        memory=64 * 2**20,
        cpus=0.5,
        pids=32,
        labels={"mao.test.limits": tag},
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(executor.run, body)
        container = _wait_until(
            lambda: next(iter(_containers(docker_client, f"mao.test.limits={tag}")), None),
            20,
            "the container",
        )
        host = container.attrs["HostConfig"]
        response = pending.result()
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]
    assert (host["PidsLimit"], host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (
        32,
        64 * 2**20,
        64 * 2**20,
        500_000_000,
    )
    assert response.status_code == 200, response.text
    out = response.json()["log_tail"]
    assert out.splitlines()[0] == "1234"
    assert "CapEff:\t0000000000000000" in out and "CapBnd:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out and "chown-refused" in out


def test_root_is_refused_and_no_user_runs_as_the_tool_uid(
    executor: Executor, dirs: tuple[Path, Path]
) -> None:
    _, output_dir = dirs
    for user in ("0", "0:0", "1234:0"):
        response = executor.run(_body(output_dir, user=user, cmd=["true"]))
        assert response.status_code == 403 and "root" in response.json()["message"], response.text
        assert response.json()["error"] == "user_not_allowed"
    response = executor.run(_body(output_dir, cmd=["sh", "-c", "id -u; id -g; id -G"]))
    assert response.status_code == 200 and response.json()["log_tail"].split() == ["1234", "1234", "1234"]


def test_validate_checks_a_run_body_without_running_it(executor: Executor, dirs: tuple[Path, Path]) -> None:
    _, output_dir = dirs

    def validate(body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{executor.url}/validate", json=body, headers=executor.headers, timeout=10)

    assert validate(_body(output_dir / "not-yet", cmd=["true"])).json() == {"ok": True}
    assert validate(_body(output_dir, cmd=["a\x00b"])).status_code == 400
    assert validate(_body(output_dir, docker_socket=True)).json()["error"] == "docker_socket_not_allowed"
    assert validate(_body(output_dir, user="0")).status_code == 403
    assert validate(_body(output_dir, timeout="60")).status_code == 400


# ----------------------------------------------------------------------------------------------------------
# the token alone is no path to root (docs/security.md#tools): each refusal through the HTTP API
# ----------------------------------------------------------------------------------------------------------


def _refused_everywhere(executor: Executor, body: dict[str, Any], code: str) -> dict[str, Any]:
    """``body`` is refused with 403 ``code`` at /validate and at /run, and /run starts no container."""
    marker = uuid.uuid4().hex
    body = {**body, "labels": {"mao.test": marker}}
    checked = requests.post(f"{executor.url}/validate", json=body, headers=executor.headers, timeout=10)
    assert checked.status_code == 403 and checked.json()["error"] == code, checked.text
    ran = executor.run(body)
    assert ran.status_code == 403 and ran.json()["error"] == code, ran.text
    assert docker.from_env().containers.list(ignore_removed=True, all=True, filters={"label": f"mao.test={marker}"}) == []
    return ran.json()


@pytest.mark.parametrize("user", ["1000:1000", "1234:1000", "1000", "65534:65534", "1234:65534"])
def test_only_the_configured_tool_user_runs(executor: Executor, dirs: tuple[Path, Path], user: str) -> None:
    _, output_dir = dirs
    answer = _refused_everywhere(executor, _body(output_dir, user=user, cmd=["true"]), "user_not_allowed")
    assert TOOL_USER in answer["message"] and "MAO_TOOL_UID" in answer["message"]
    # The configured user itself, with or without its group spelled out, runs.
    for same in (TOOL_USER, TOOL_USER.split(":")[0]):
        assert executor.run(_body(output_dir, user=same, cmd=["true"])).json()["exit_code"] == 0


def test_the_docker_socket_group_is_never_the_tool_group(executor_logs: Path) -> None:
    group = str(os.stat(DOCKER_SOCKET).st_gid)
    env = {**os.environ, "MAO_EXECUTOR_TOKEN": "t" * 20, "MAO_TOOL_GID": group}
    done = subprocess.run(
        [sys.executable, "-m", "executor", "--check-config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and f"MAO_TOOL_GID={group}" in done.stderr and "Docker socket" in done.stderr


def test_folders_outside_the_data_root_are_not_mounted(
    executor: Executor, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, output_dir = dirs
    escape = tmp_path / "escape"
    escape.symlink_to("/etc")
    outside = ["/etc", "/", "/var/run", str(escape), str(escape / "ssl"), str(tmp_path / ".." / ".." / ".." / "..")]
    for path in outside:
        for field in ("output_dir", "input_dir"):
            body = {**_body(output_dir, cmd=["true"]), field: path}
            answer = _refused_everywhere(executor, body, "mount_not_allowed")
            assert field in answer["message"] and "MAO_EXECUTOR_DATA_ROOT" in answer["message"], answer
    # The data root itself (every instance's data, tokens and databases) is not a folder below it.
    root = tempfile.gettempdir()
    _refused_everywhere(executor, _body(root, cmd=["true"]), "mount_not_allowed")


def test_the_executors_own_folders_are_not_mounted(
    executor_logs: Path, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, output_dir = dirs
    logs = tmp_path / "kept-logs"  # where its containers' full output waits to be fetched
    service = start_executor(executor_logs, f"pytest-own-{uuid.uuid4().hex[:8]}", {"MAO_EXECUTOR_LOG_DIR": str(logs)})
    try:
        own = Path(tempfile.gettempdir()) / "executor"  # its private folder under the data root
        for folder in (own, own / "sub", logs, logs / "000001-x", logs.parent):
            for field in ("output_dir", "input_dir"):
                body = {**_body(output_dir, cmd=["true"]), field: str(folder)}
                answer = _refused_everywhere(service, body, "mount_not_allowed")
                assert "executor's own files" in answer["message"], answer
    finally:
        assert service.stop() == 0


def test_a_symlink_inside_the_data_root_is_mounted_as_what_it_resolves_to(
    executor: Executor, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    input_dir, output_dir = dirs
    (input_dir / "in.txt").write_text("through the link\n")
    link = tmp_path / "link-to-input"
    link.symlink_to(input_dir)
    response = executor.run(_body(output_dir, input_dir=str(link), cmd=["cat", "/usr/src/app/input/in.txt"]))
    assert response.status_code == 200 and response.json()["log_tail"] == "through the link\n", response.text
