"""maoctl without a server: it stays light, shares the orchestrator's constants, checks etcd values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctl.cluster import initial_cluster_problem, parse_initial_cluster, peer_url, peer_url_problem
from ctl.env_files import parse_env
from ctl.pipeline_input import PRIVATE_PLACEHOLDER
from orchestrator.config import read_env_file
from orchestrator.domain.pipeline import PRIVATE_PLACEHOLDER as SERVER_PLACEHOLDER
from tests.ctl_helpers import REPO_ROOT

HEAVY = ("aiohttp", "sqlalchemy", "docker", "aetcd", "pydantic", "grpc", "git", "apscheduler")


def test_maoctl_does_not_import_the_daemons_dependencies() -> None:
    code = (
        "import sys, json, ctl.cli, ctl.wizard.install, ctl.wizard.init, ctl.compose;"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {list(HEAVY)!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_private_placeholder_matches_the_server() -> None:
    assert PRIVATE_PLACEHOLDER == SERVER_PLACEHOLDER


def test_env_files_read_the_same_by_maoctl_and_the_orchestrator(tmp_path: Path) -> None:
    text = "# comment\nMAO_INSTANCE_NAME=node-1\nMAO_DATABASE_URL=postgresql+asyncpg://mao:a-b_c@127.0.0.1:5433/mao\n"
    (tmp_path / "mao.env").write_text(text)
    assert parse_env(text) == read_env_file(tmp_path / "mao.env")


def test_peer_urls() -> None:
    assert peer_url("10.0.0.5") == "https://10.0.0.5:2380"  # members talk over TLS by default
    assert peer_url("fd00::2") == "https://[fd00::2]:2380"
    assert peer_url("10.0.0.5", tls=False) == "http://10.0.0.5:2380"
    assert peer_url_problem("http://10.0.0.5:2380") is None
    assert peer_url_problem("http://[fd00::2]:2380") is None
    for bad in ("10.0.0.5:2380", "http://10.0.0.5", "ftp://x:1", "http://x:2380/path", "http://x:99999"):
        assert peer_url_problem(bad), bad


def test_initial_cluster_values() -> None:
    value = "ETCD_INITIAL_CLUSTER=a=http://10.0.0.1:2380,b=http://10.0.0.2:2380"
    assert parse_initial_cluster(value) == [("a", "http://10.0.0.1:2380"), ("b", "http://10.0.0.2:2380")]
    assert initial_cluster_problem(value, "b", "http://10.0.0.2:2380") is None
    assert "does not list this instance" in (
        initial_cluster_problem(value, "c", "http://10.0.0.3:2380") or ""
    )
    assert "federation add-member --name c" in (
        initial_cluster_problem(value, "c", "http://10.0.0.3:2380") or ""
    )
    assert "this instance's peer URL is" in (
        initial_cluster_problem(value, "b", "http://10.9.9.9:2380") or ""
    )
    assert "only this instance" in (
        initial_cluster_problem("b=http://10.0.0.2:2380", "b", "http://10.0.0.2:2380") or ""
    )


@pytest.mark.parametrize(
    "value",
    ["", "a", "a=10.0.0.1:2380", "-rf=http://10.0.0.1:2380", "a=http://x:1,a=http://y:1", "a=http://x"],
)
def test_malformed_initial_cluster_values(value: str) -> None:
    with pytest.raises(ValueError):
        parse_initial_cluster(value)
