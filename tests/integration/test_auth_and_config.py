"""The API token, and configurations that refuse to start."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import servers
from tests.api import assert_error

from .conftest import orchestrator_env


@pytest.fixture(scope="module")
def guarded(servers_tmp: Path, etcd, executor) -> Iterator[servers.ServiceProcess]:
    env = orchestrator_env(
        "node-guarded", servers_tmp / "node-guarded", etcd.endpoint, executor, MAO_API_TOKEN="t0ken"
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-guarded")
    yield service
    service.stop()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "t0ken"}, {"Authorization": "Basic t0ken"}],
)
def test_requests_without_the_token_are_401(guarded: servers.ServiceProcess, headers: dict) -> None:
    for method, path in (
        ("GET", "/health"),
        ("GET", "/registry/tools"),
        ("POST", "/pipeline/run"),
        ("GET", "/nowhere"),
    ):
        assert_error(
            requests.request(method, guarded.url + path, headers=headers, timeout=10), 401, "unauthorized"
        )
    # Liveness answers anyone, and tells nothing a caller could use.
    assert requests.get(guarded.url + "/", headers=headers, timeout=10).status_code == 200


def test_requests_with_the_token_pass(guarded: servers.ServiceProcess) -> None:
    response = requests.get(
        guarded.url + "/registry/tools", headers={"Authorization": "Bearer t0ken"}, timeout=10
    )
    assert response.status_code == 200 and isinstance(response.json(), list)


def test_unworkable_configuration_refuses_to_start(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MAO_API_HOST": "0.0.0.0",
        "MAO_API_LEGACY_OPEN": "1",
        "MAO_DATA_DIR": str(tmp_path),
        "MAO_EXECUTOR_URL": "nope",
    }
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert (
        "MAO_EXECUTOR_TOKEN" in done.stderr
        and "MAO_API_LEGACY_OPEN" in done.stderr
        and "MAO_EXECUTOR_URL" in done.stderr
        and "MAO_ETCD_INSECURE=1" in done.stderr  # no etcd certificates, and plain HTTP not asked for
    )
    assert "Traceback" not in done.stderr


def test_check_config_prints_settings_without_secrets(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MAO_DATA_DIR": str(tmp_path),
        "MAO_EXECUTOR_TOKEN": "very-secret",
        "MAO_API_TOKEN": "also-secret",
        "MAO_ETCD_INSECURE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "very-secret" not in done.stdout
        and "also-secret" not in done.stdout
        and '"MAO_API_PORT": 8080' in done.stdout
    )
