"""The API's guards and the data's confinement (docs/security.md), on a node that generated its own
token, and on one in the prototype's legacy open mode."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import servers
from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl_process

from .conftest import orchestrator_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def fresh(servers_tmp: Path, etcd, executor) -> Iterator[servers.ServiceProcess]:
    """A node started without MAO_API_TOKEN: it generates its token into its data dir."""
    data_dir = servers_tmp / "node-fresh"
    env = orchestrator_env("node-fresh", data_dir, etcd.endpoint, executor, MAO_API_TOKEN="")
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-fresh")
    yield service
    service.stop()


def test_generated_token_file_and_private_data(fresh: servers.ServiceProcess) -> None:
    data_dir = Path(fresh.env["MAO_DATA_DIR"])
    token_file = data_dir / "api-token"
    token = token_file.read_text().strip()
    assert len(token) >= 32 and mode(token_file) == 0o600
    assert mode(data_dir) == 0o700
    api = Api(fresh.url, token)
    api.ok(api.get("/health"))  # the database now exists, with its WAL
    database = [p for p in data_dir.iterdir() if p.name.startswith("mao.db")]
    assert database and all(mode(p) == 0o600 for p in database), [(p.name, oct(mode(p))) for p in database]
    # The log says where the token is, never the token.
    log = fresh.log_text()
    assert str(token_file) in log and token not in log
    # Its etcd is plain HTTP (the session's): the log says that is for tests only.
    assert "MAO_ETCD_INSECURE=1: etcd is reached over plain HTTP, for tests only" in log
    # No token, a wrong one: 401 everywhere but GET /.
    for headers in ({}, {"Authorization": "Bearer " + token[:-1] + "x"}):
        for method, path in (("GET", "/health"), ("GET", "/registry/datasets"), ("DELETE", "/jobs/x")):
            assert_error(requests.request(method, fresh.url + path, headers=headers, timeout=10), 401)
        assert requests.get(fresh.url + "/", headers=headers, timeout=10).status_code == 200


def test_maoctl_finds_the_token_file(fresh: servers.ServiceProcess) -> None:
    data_dir = fresh.env["MAO_DATA_DIR"]
    found = maoctl_process(
        "--json",
        "instance",
        "status",
        env={"MAO_URL": fresh.url, "MAO_DATA_DIR": data_dir, "MAO_API_TOKEN": ""},
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["instance"] == "node-fresh"
    # Named by its socket, the token file beside it is used, through that socket.
    by_socket = maoctl_process(
        "--url", f"unix://{data_dir}/api.sock", "--json", "instance", "status", env={"MAO_API_TOKEN": ""}
    )
    assert by_socket.returncode == 0 and json.loads(by_socket.stdout)["instance"] == "node-fresh", by_socket.stderr
    # Elsewhere (another data dir), it has no token and says how to give one.
    lost = maoctl_process("--url", fresh.url, "tool", "get", env={"MAO_API_TOKEN": ""})
    assert lost.returncode == 1 and "api-token" in lost.stderr and "Traceback" not in lost.stderr


def test_writes_must_be_json(fresh: servers.ServiceProcess) -> None:
    api = Api(fresh.url, fresh.token)
    tool = {"name": unique("t"), "image": "busybox:latest"}
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        refused = api.post("/registry/tools", data=json.dumps(tool), headers={"Content-Type": content_type})
        assert_error(refused, 415, "unsupported_media_type")
    assert api.session.get(fresh.url + f"/registry/tools/{tool['name']}", timeout=10).status_code == 404
    api.ok(api.post("/registry/tools", tool))


def test_foreign_host_and_origin_are_refused(fresh: servers.ServiceProcess) -> None:
    api = Api(fresh.url, fresh.token)
    body = json.dumps({"name": unique("p")})
    # DNS rebinding: the page's own name arrives as Host.
    rebound = api.post("/pipeline/run", data=body, headers={"Host": f"evil.example.org:{fresh.port}"})
    assert_error(rebound, 421, "unknown_host")
    liveness = api.session.get(fresh.url + "/", headers={"Host": "evil.example.org"}, timeout=10)
    assert_error(liveness, 421)
    # CSRF: another site's page in the operator's browser.
    for origin in ("http://evil.example.org", "null", f"http://localhost:{fresh.port + 1}"):
        refused = api.post("/registry/tools", data=body, headers={"Origin": origin})
        assert_error(refused, 403, "foreign_origin")
        # A bare POST (no body, no content type: what a page can send without a preflight) too.
        bare = requests.post(
            fresh.url + "/runs/0123abcd/cancel",
            headers={"Origin": origin, "Authorization": f"Bearer {fresh.token}"},
            timeout=10,
        )
        assert_error(bare, 403, "foreign_origin")
    # The API's own origin (a page it served itself) and no Origin (curl, maoctl) pass.
    assert api.get("/health").status_code == 200
    own = api.session.get(fresh.url + "/health", headers={"Origin": fresh.url}, timeout=10)
    assert own.status_code == 200


def test_masters_are_confined_and_carry_no_credentials(fresh: servers.ServiceProcess, tmp_path: Path) -> None:
    api = Api(fresh.url, fresh.token)
    name = unique("ds")
    outside = tmp_path / "escape"
    outside.symlink_to("/etc")
    inside_link = Path(fresh.env["MAO_MASTER_ROOTS"]) / f"{name}-link"
    inside_link.symlink_to("/etc")
    try:
        for master in (
            "/etc",
            "file:///etc",
            "../..",
            "../../../../../../etc",
            str(outside),
            str(inside_link),
        ):
            refused = api.post("/registry/datasets", {"name": name, "body": {"master": master, "nodes": []}})
            assert_error(refused, 400)
            assert "MAO_MASTER_ROOTS" in refused.json()["message"], master
        for master in (
            "https://user:secret@example.org/x.git",
            "https://ghp_token@example.org/x.git",
            "https://example.org/x.git?private_token=secret",
            "https://example.org/x.git%3Faccess_token%3Dsecret",
            "https://example.org/x.git#secret",
            "https://user%3Asecret@example.org/x.git",
        ):
            refused = api.post("/registry/datasets", {"name": name, "body": {"master": master, "nodes": []}})
            body = assert_error(refused, 400)
            assert "MAO_GIT_CREDENTIALS" in body["message"] and "secret" not in refused.text
        assert_error(api.get(f"/registry/datasets/{name}"), 404)
        # A bare repository this node created is a fine master, and so is an SSH URL with its user.
        api.local_dataset(name)
        api.ok(
            api.post(
                "/registry/datasets",
                {"name": unique("ssh"), "body": {"master": "ssh://git@example.org/x.git"}},
            )
        )
    finally:
        inside_link.unlink()


@pytest.fixture(scope="module")
def legacy(servers_tmp: Path, etcd, executor) -> Iterator[servers.ServiceProcess]:
    env = orchestrator_env(
        "node-legacy", servers_tmp / "node-legacy", etcd.endpoint, executor, MAO_API_LEGACY_OPEN="1"
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-legacy")
    yield service
    service.stop()


def test_legacy_open_mode(legacy: servers.ServiceProcess) -> None:
    open_api = Api(legacy.url, "")
    assert isinstance(open_api.ok(open_api.get("/registry/tools")), list)
    health = open_api.ok(open_api.get("/health"))
    assert "MAO_API_LEGACY_OPEN" in health["warnings"][0]
    assert "MAO_API_LEGACY_OPEN=1" in legacy.log_text()
    assert not (Path(legacy.env["MAO_DATA_DIR"]) / "api-token").exists()
    # The other guards stay.
    assert_error(open_api.post("/registry/tools", data="{}", headers={"Content-Type": "text/plain"}), 415)
    assert_error(
        open_api.session.get(legacy.url + "/health", headers={"Origin": "http://evil.example"}, timeout=10),
        403,
    )
    assert os.environ.get("MAO_API_LEGACY_OPEN") is None  # nothing leaked into the test process
