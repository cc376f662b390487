"""From a local user's position (a process running as uid 65534): take the addresses the orchestrator
and maoctl send their tokens to, while the real server restarts, and receive nothing
(docs/security.md#transports).

Each scenario runs a step with a private variable before, during and after the squat: the step works
when the real server is there, fails (saying why) while only the squatter is, and the squatter never
sees the executor token, the API token or the secret.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.tls import ensure_certificate, fingerprint_of
from executor.transport import format_fingerprint, parse_fingerprint
from tests import servers
from tests.api import Api, one_step_pipeline
from tests.ctl_helpers import maoctl_process
from tests.servers.squatter import Squatter

from .conftest import orchestrator_env

pytestmark = pytest.mark.skipif(not servers.is_root(), reason="needs root to run the squatter as uid 65534")

SECRET = "s3cr3t-private-value-7c1d"


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder uid 65534 may use (the test's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="mao-sq-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def secret_pipeline(api: Api) -> str:
    pipeline, _ = one_step_pipeline(
        api,
        'test "$API_KEY" = "$EXPECTED" && date > /usr/src/app/data/ran',
        env={"API_KEY": "{{ MAO_PRIVATE_VARIABLE }}", "EXPECTED": SECRET},
        private_env={"API_KEY": SECRET},
    )
    return pipeline


def assert_learned_nothing(squatter: Squatter, *secrets: str) -> None:
    received = squatter.received()
    for secret in secrets:
        assert secret.encode() not in received, f"the squatter received a secret: {received[:300]!r}"
    assert not any(secret in json.dumps(squatter.events) for secret in secrets)


def test_a_squatter_on_the_executors_socket_path_gets_nothing(
    servers_tmp: Path, etcd, busybox_image: str, tmp_path: Path
) -> None:
    """The default: the executor's socket is in a 0700 folder; a local user cannot put one there."""
    executor = servers.start_executor({"MAO_INSTANCE_NAME": "sq-unix"}, log_dir=servers_tmp / "logs")
    env = orchestrator_env("node-sq-unix", tmp_path / "node", etcd.endpoint, executor)
    node = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-sq-unix")
    api = Api(node.url, node.token)
    squatter = None
    try:
        pipeline = secret_pipeline(api)
        assert api.run(pipeline)["status"] == "succeeded"
        executor.stop()
        assert executor.socket is not None
        squatter = Squatter.start(unix=[executor.socket])
        assert squatter.where("refused") == {f"unix:{executor.socket}"}  # its folder is the executor's
        run = api.run(pipeline)
        assert run["status"] == "failed" and "executor" in run["error"], run
        squatter.stop()
        assert squatter.where("connection") == set()
        assert_learned_nothing(squatter, executor.token or "", node.token or "", SECRET)
        executor.restart()
        assert api.run(pipeline)["status"] == "succeeded"
    finally:
        if squatter is not None:
            squatter.stop()
        node.stop()
        executor.stop()


def test_a_socket_in_a_folder_others_may_write_is_not_trusted(
    servers_tmp: Path, etcd, executor, busybox_image: str, tmp_path: Path, open_folder: Path
) -> None:
    """Misconfigured: MAO_EXECUTOR_URL names a socket in a world-writable folder, which a local user
    took. The orchestrator refuses to talk to it: the run fails saying so, the squatter gets no byte."""
    env = orchestrator_env("node-sq-open", tmp_path / "node", etcd.endpoint, executor)
    node = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-sq-open")
    api = Api(node.url, node.token)
    path = open_folder / "executor.sock"
    squatter = Squatter.start(unix=[str(path)])
    try:
        pipeline = secret_pipeline(api)  # initialised while the real executor could check it
        node.stop()
        node.process.env["MAO_EXECUTOR_URL"] = f"unix://{path}"
        node.process.start()
        node.wait_ready()
        assert squatter.where("listening") == {f"unix:{path}"}
        health = api.get("/health").json()
        assert "did not prove" in health["executor"] and "written by other users" in health["executor"]
        run = api.run(pipeline)
        assert run["status"] == "failed" and "did not prove" in run["error"], run
        squatter.stop()
        assert squatter.where("connection") == set()
        assert_learned_nothing(squatter, executor.token or "", node.token or "", SECRET)
    finally:
        squatter.stop()
        node.stop()


def test_a_squatter_on_a_tls_executors_port_gets_nothing(
    servers_tmp: Path, etcd, busybox_image: str, tmp_path: Path, open_folder: Path
) -> None:
    """An executor on another host: TLS, its certificate pinned. A local user who takes its port with
    a certificate of their own completes no request."""
    port = servers.free_port()
    executor = servers.start_executor(
        {
            "MAO_INSTANCE_NAME": "sq-tls",
            "MAO_EXECUTOR_LISTEN": "tls",
            "MAO_EXECUTOR_PORT": str(port),
            "MAO_EXECUTOR_DATA_ROOT": str(tmp_path),
        },
        log_dir=servers_tmp / "logs",
    )
    cert = tmp_path / "executor" / "tls.crt"  # its own, generated at its first start
    pin = format_fingerprint(fingerprint_of(cert))
    assert parse_fingerprint(pin) == fingerprint_of(cert) and pin in executor.log_text()
    env = orchestrator_env(
        "node-sq-tls", tmp_path / "node", etcd.endpoint, executor, MAO_EXECUTOR_TLS_FINGERPRINT=pin
    )
    node = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-sq-tls")
    api = Api(node.url, node.token)
    # The squatter's own certificate, readable by it.
    fake_cert, fake_key = ensure_certificate(open_folder / "tls", "sq-tls", "127.0.0.1")
    (open_folder / "tls").chmod(0o755)
    fake_key.chmod(0o644)
    squatter = None
    try:
        pipeline = secret_pipeline(api)
        assert api.run(pipeline)["status"] == "succeeded"
        executor.stop()
        squatter = Squatter.start(tcp=[port], cert=str(fake_cert), key=str(fake_key))
        assert squatter.where("listening") == {f"tcp:{port}"}
        run = api.run(pipeline)
        assert run["status"] == "failed" and "did not prove" in run["error"], run
        squatter.stop()
        assert squatter.where("connection"), "the orchestrator should have tried the port"
        assert squatter.received() == b""
        assert_learned_nothing(squatter, executor.token or "", node.token or "", SECRET)
        executor.restart()
        assert api.run(pipeline)["status"] == "succeeded"
    finally:
        if squatter is not None:
            squatter.stop()
        node.stop()
        executor.stop()


def test_a_squatter_on_the_api_port_never_gets_maoctls_token(
    servers_tmp: Path, etcd, executor, busybox_image: str, tmp_path: Path
) -> None:
    """maoctl on this host finds the local token file and sends it only through the orchestrator's
    socket: a local user holding the API's TCP port while the orchestrator restarts gets no token."""
    data_dir = tmp_path / "node"
    env = orchestrator_env("node-sq-api", data_dir, etcd.endpoint, executor, MAO_API_TOKEN="")
    node = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-sq-api")
    local = {"MAO_URL": node.url, "MAO_DATA_DIR": str(data_dir), "MAO_API_TOKEN": ""}
    squatter = None
    try:
        token = node.token
        assert token and (data_dir / "api.sock").exists()
        status = maoctl_process("--json", "instance", "status", env=local)
        assert status.returncode == 0 and json.loads(status.stdout)["instance"] == "node-sq-api", status.stderr
        node.stop()
        assert not (data_dir / "api.sock").exists()
        squatter = Squatter.start(tcp=[node.port], unix=[str(data_dir / "api.sock")])
        assert squatter.where("listening") == {f"tcp:{node.port}"}
        assert squatter.where("refused") == {f"unix:{data_dir / 'api.sock'}"}
        for args in (("instance", "status"), ("tool", "get"), ("pipeline", "get")):
            refused = maoctl_process(*args, env=local)
            assert refused.returncode == 1 and "is not running" in refused.stderr, refused.stderr
        squatter.stop()
        # maoctl sent it nothing at all: not the token, and no request it could answer in the
        # orchestrator's place.
        assert squatter.where("connection") == set()
        assert_learned_nothing(squatter, token)
        node.process.start()
        node.wait_ready()
        assert maoctl_process("instance", "status", env=local).returncode == 0
    finally:
        if squatter is not None:
            squatter.stop()
        node.stop()
