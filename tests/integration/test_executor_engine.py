"""The executor endpoints the run engine needs: POST /kill (cancel), POST /image (the cache key) and
stall_timeout on /run. Against the session's executor and Docker engine."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from tests import servers

from .test_run_engine import containers_of


def _post(executor: servers.ServiceProcess, path: str, body: Any, timeout: float = 120) -> requests.Response:
    return executor.request("POST", path, json=body, headers=executor.headers, timeout=timeout)


def _body(tmp_path: Path, run: str, cmd: list[str], **extra: Any) -> dict[str, Any]:
    out = tmp_path / uuid.uuid4().hex[:8]
    out.mkdir()
    return {
        "image": "busybox:latest",
        "cmd": cmd,
        "output_dir": str(out),
        "labels": {"mao.run": run, "mao.step": "s"},
        **extra,
    }


def test_image_ids(executor: servers.ServiceProcess) -> None:
    found = _post(executor, "/image", {"image": "busybox:latest"})
    assert found.status_code == 200 and found.json()["id"].startswith("sha256:")
    assert _post(executor, "/image", {"image": "no-such-image:never"}).json() == {"id": None}
    assert _post(executor, "/image", {"image": "busybox", "pull": True}).status_code == 400


def test_kill_removes_a_running_container_and_refuses_later_runs(
    executor: servers.ServiceProcess, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex
    answers: list[requests.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(_post(executor, "/run", _body(tmp_path, run, ["sleep", "300"])))
    )
    thread.start()
    servers.wait_until(lambda: containers_of(run) != [], timeout=60, what="the container")
    started = time.monotonic()
    killed = _post(executor, "/kill", {"run": run})
    assert killed.status_code == 200 and len(killed.json()["removed"]) == 1
    assert containers_of(run) == [] and time.monotonic() - started < 10
    thread.join(60)
    (answer,) = answers
    assert answer.status_code == 200 and answer.json()["cancelled"] is True
    later = _post(executor, "/run", _body(tmp_path, run, ["true"]))
    assert later.status_code == 409 and later.json()["error"] == "cancelled"
    assert _post(executor, "/kill", {"run": "not valid!"}).status_code == 400
    assert _post(executor, "/kill", {"run": run, "extra": 1}).status_code == 400


def test_a_silent_container_is_stalled(executor: servers.ServiceProcess, tmp_path: Path) -> None:
    run = uuid.uuid4().hex
    started = time.monotonic()
    body = _body(tmp_path, run, ["sh", "-c", "echo one; sleep 1; echo two; sleep 300"], stall_timeout=2.5)
    answer = _post(executor, "/run", body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["stalled"] is True and result["exit_code"] is None and result["timed_out"] is False
    assert "two" in result["log_tail"]  # output after a pause restarted the clock
    assert time.monotonic() - started < 60
    assert containers_of(run) == []
