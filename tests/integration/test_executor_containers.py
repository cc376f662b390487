"""The executor's container API (``/containers``, executor/containers.py): what the orchestrator's
Docker backend uses. Against real executors and the real Docker engine: idempotent submit, the
long-polled wait and its ends (exit, OOM, timeout, unschedulable), output from a byte offset,
removal that is safe to repeat, the same hardening as /run, and containers that outlive the
executor itself (adopted at its next start)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests import servers

LONG = 120


def _dir(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    folder.chmod(0o777)  # the tool's uid writes it
    return folder


def body(tmp_path: Path, cmd: list[str], **extra: Any) -> dict[str, Any]:
    name = f"mao-test-{uuid.uuid4().hex[:12]}"
    return {
        "name": name,
        "image": "busybox:latest",
        "cmd": cmd,
        "output_dir": str(_dir(tmp_path, name)),
        "labels": {"mao.instance": "containers-test", "mao.run": uuid.uuid4().hex, "mao.step": "s"},
        "timeout": 60,
        **extra,
    }


class Client:
    """The executor's container API over its socket (``ServiceProcess.request``), with its token."""

    def __init__(self, service: servers.ServiceProcess) -> None:
        self.service = service
        self.headers = service.headers

    def post(self, path: str, payload: Any) -> requests.Response:
        return self.service.request("POST", path, json=payload, headers=self.headers, timeout=LONG)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.service.request("GET", path, params=params, headers=self.headers, timeout=LONG)

    def delete(self, path: str) -> requests.Response:
        return self.service.request("DELETE", path, headers=self.headers, timeout=LONG)

    def submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = self.post("/containers", payload)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait(self, name: str, tail: int = 50) -> dict[str, Any]:
        deadline = time.monotonic() + LONG
        while time.monotonic() < deadline:
            answer = self.get(f"/containers/{name}/wait", hold=10, tail=tail)
            assert answer.status_code == 200, answer.text
            if answer.json()["phase"] == "ended":
                return answer.json()
        raise AssertionError(f"{name} did not end")

    def logs(self, name: str, since: int = 0, follow: bool = False) -> bytes:
        answer = self.get(f"/containers/{name}/logs", since=since, follow=int(follow))
        assert answer.status_code == 200, answer.text
        return answer.content


@pytest.fixture
def client(executor: servers.ServiceProcess) -> Client:
    return Client(executor)


@pytest.fixture
def one_slot(servers_tmp: Path, docker_engine, busybox_image: str) -> Iterator[Client]:
    """A private executor with one slot (MAO_EXECUTOR_MAX_PARALLEL=1)."""
    service = servers.start_executor(
        {"MAO_EXECUTOR_MAX_PARALLEL": "1"}, log_dir=servers_tmp / "logs", name=f"one-slot-{uuid.uuid4().hex[:6]}"
    )
    try:
        yield Client(service)
    finally:
        service.stop()


def _containers(name: str) -> list[Any]:
    client = docker.from_env()
    try:
        return client.containers.list(ignore_removed=True, all=True, filters={"name": f"^/{name}$"})
    finally:
        client.close()


def test_submit_is_idempotent_and_a_container_ends_then_goes(client: Client, tmp_path: Path) -> None:
    payload = body(tmp_path, ["sh", "-c", "echo one; echo two >&2; echo three > /usr/src/app/data/out"])
    first = client.submit(payload)
    again = client.submit(payload)  # the same name: the same container, never a second one
    assert first["engine_id"] == again["engine_id"] and first["phase"] in ("running", "ended")
    assert first["image_id"].startswith("sha256:") and first["node"]
    ended = client.wait(payload["name"])
    assert (ended["ending"], ended["exit_code"]) == ("completed", 0)
    assert ended["queued_seconds"] is not None and ended["run_seconds"] is not None
    assert "one" in ended["log_tail"] and "two" in ended["log_tail"]
    assert (Path(payload["output_dir"]) / "out").read_text() == "three\n"
    whole = client.logs(payload["name"])
    assert sorted(whole.splitlines()) == [b"one", b"two"]
    assert client.logs(payload["name"], since=2) == whole[2:]  # from a byte offset
    assert client.logs(payload["name"], follow=True) == whole  # an ended container: all, then the end
    listed = client.get("/containers", instance="containers-test").json()["containers"]
    assert payload["name"] in [c["name"] for c in listed]
    assert client.delete(f"/containers/{payload['name']}").json() == {"name": payload["name"], "removed": True}
    assert client.delete(f"/containers/{payload['name']}").json()["removed"] is False  # safe to repeat
    assert _containers(payload["name"]) == []
    gone = client.get(f"/containers/{payload['name']}/wait", hold=0)
    assert gone.status_code == 404 and gone.json()["error"] == "container_not_found"


@pytest.mark.parametrize(
    ("cmd", "extra", "ending", "code"),
    [
        (["sh", "-c", "exit 3"], {}, "failed", 3),
        (["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"], {"memory": 16 * 2**20}, "oom_killed", 137),
        (["sleep", "300"], {"timeout": 2}, "timed_out", 137),
    ],
)
def test_how_a_container_ended(
    client: Client, tmp_path: Path, cmd: list[str], extra: dict[str, Any], ending: str, code: int
) -> None:
    payload = body(tmp_path, cmd, **extra)
    client.submit(payload)
    ended = client.wait(payload["name"])
    assert (ended["ending"], ended["exit_code"]) == (ending, code), ended
    client.delete(f"/containers/{payload['name']}")


def test_a_container_without_a_slot_waits_and_past_its_start_timeout_is_unschedulable(
    one_slot: Client, tmp_path: Path
) -> None:
    busy = body(tmp_path, ["sh", "-c", "sleep 4"])
    waits = body(tmp_path, ["sh", "-c", "echo my turn"])
    hopeless = body(tmp_path, ["sh", "-c", "echo never"], start_timeout=1)
    assert one_slot.submit(busy)["phase"] == "running"
    assert one_slot.submit(waits)["phase"] == "queued"
    assert one_slot.submit(hopeless)["phase"] == "queued"
    given_up = one_slot.wait(hopeless["name"])
    assert given_up["ending"] == "unschedulable" and given_up["exit_code"] is None and given_up["started_at"] is None
    assert "start_timeout" in given_up["message"]
    assert one_slot.wait(busy["name"])["ending"] == "completed"
    turn = one_slot.wait(waits["name"])
    assert turn["ending"] == "completed" and turn["queued_seconds"] >= 1, turn
    assert one_slot.logs(waits["name"]) == b"my turn\n"
    for payload in (busy, waits, hopeless):
        one_slot.delete(f"/containers/{payload['name']}")
        assert _containers(payload["name"]) == []


def test_containers_outlive_their_executor_and_are_adopted(one_slot: Client, tmp_path: Path) -> None:
    # It runs until the test lets it finish, however long the restart takes.
    script = "echo before; while [ ! -e /usr/src/app/data/go ]; do sleep 0.1; done; echo after"
    payload = body(tmp_path, ["sh", "-c", script])
    first = one_slot.submit(payload)
    one_slot.service.stop()
    container = _containers(payload["name"])[0]
    assert container.status == "running"  # the executor stopped; the tool goes on
    one_slot.service.restart()
    assert "Watching again 1 submitted container(s)" in one_slot.service.log_text()
    (Path(payload["output_dir"]) / "go").touch()
    ended = one_slot.wait(payload["name"])
    assert ended["ending"] == "completed" and ended["engine_id"] == first["engine_id"]
    assert one_slot.logs(payload["name"]) == b"before\nafter\n"
    one_slot.delete(f"/containers/{payload['name']}")


def test_submitted_containers_are_hardened_as_runs_are(client: Client, tmp_path: Path) -> None:
    inputs = _dir(tmp_path, "input")
    (inputs / "in.txt").write_text("input\n")
    script = (
        "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
        "echo x > /usr/src/app/input/in.txt 2>/dev/null && echo input-written || echo input-read-only"
    )
    payload = body(tmp_path, ["sh", "-c", script], input_dir=str(inputs), pids=32)
    client.submit(payload)
    host = docker.from_env().api.inspect_container(payload["name"])["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["PidsLimit"] == 32 and host["RestartPolicy"]["Name"] in ("", "no")
    out = client.wait(payload["name"])["log_tail"]
    # The executor's one tool user (MAO_TOOL_UID, 65534 by default), never root, no capability.
    assert out.splitlines()[0] == "65534" and "CapEff:\t0000000000000000" in out and "NoNewPrivs:\t1" in out
    assert "input-read-only" in out
    client.delete(f"/containers/{payload['name']}")
    for user in ("0", "0:0", "1234:1234"):
        refused = client.post("/containers", body(tmp_path, ["true"], user=user))
        assert refused.status_code == 403 and refused.json()["error"] == "user_not_allowed", refused.text


def test_bad_submits_are_json_errors_naming_the_field(client: Client, tmp_path: Path) -> None:
    cases = [
        ({k: v for k, v in body(tmp_path, ["true"]).items() if k != "name"}, "name"),
        (body(tmp_path, ["true"], labels={"mao.executor": "me"}), "mao.executor"),
        (body(tmp_path, ["true"], start_timeout=0), "start_timeout"),
        (body(tmp_path, ["true"], stall_timeout=5), "stall_timeout"),  # the orchestrator's, not here
        (body(tmp_path, ["true"], docker_socket=True), "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES"),
    ]
    for payload, word in cases:
        answer = client.post("/containers", payload)
        assert answer.status_code in (400, 403) and word in answer.json()["message"], (word, answer.text)
    assert client.get("/containers/no-such-container/wait", hold=0).status_code == 404
    assert client.get("/containers/x/wait", hold="soon").status_code == 400
    assert client.get("/containers/x/logs", follow=2).status_code == 400
    anonymous = client.service.request("GET", "/containers", timeout=10)
    assert anonymous.status_code == 401
    assert json.loads(client.post("/containers/validate", body(tmp_path, ["true"])).text) == {"ok": True}
    assert os.path.isdir(tmp_path)
