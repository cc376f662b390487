"""The pieces of the API's and the data's guards that need no server (docs/security.md)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ctl.token import local_token
from orchestrator.access import host_name
from orchestrator.config import load_settings
from orchestrator.datasets import _git
from orchestrator.datasets.masters import resolve_master
from orchestrator.domain.masters import credentials_problem
from orchestrator.errors import BadRequest
from orchestrator.private_files import ensure_api_token, tighten


def test_host_names() -> None:
    assert host_name("LOCALHOST:8080") == "localhost"
    assert host_name("[::1]:8080") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("") == ""


@pytest.mark.parametrize(
    "master",
    ["/etc", "file:///etc", "../..", "/tmp/../etc", "file://otherhost/srv/x.git", "file://localhost/etc"],
)
def test_local_masters_outside_the_roots_are_refused(tmp_path: Path, master: str) -> None:
    with pytest.raises(BadRequest) as refused:
        resolve_master(master, [tmp_path / "repos"])
    assert "MAO_MASTER_ROOTS" in refused.value.message


def test_masters_under_the_roots_and_remotes(tmp_path: Path) -> None:
    root = (tmp_path / "repos").resolve()
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    assert resolve_master("git-link", [root]) == str(root / "git-link")
    assert resolve_master(f"file://{root}/a.git", [root]) == str(root / "a.git")
    assert resolve_master("https://example.org/x.git", [root]) == "https://example.org/x.git"
    assert resolve_master("git@example.org:x.git", [root]) == "git@example.org:x.git"
    with pytest.raises(BadRequest):
        resolve_master(str(root / "escape"), [root])  # a symlink in the root pointing out of it
    with pytest.raises(BadRequest):
        resolve_master("/srv/x.git", [])


@pytest.mark.parametrize(
    ("master", "refused"),
    [
        ("https://user:pw@example.org/x.git", True),
        ("https://token@example.org/x.git", True),
        ("ssh://git:pw@example.org/x.git", True),
        ("ssh://git@example.org/x.git", False),
        ("git@example.org:x.git", False),
        ("https://example.org/x.git", False),
    ],
)
def test_credentials_in_master_urls(master: str, refused: bool) -> None:
    assert (credentials_problem(master) is not None) is refused


def test_git_reads_credentials_only_from_the_configured_file(tmp_path: Path) -> None:
    store = tmp_path / "credentials"
    store.write_text("https://user:s3cret@example.org\n")
    _git.use_credentials_file(str(store))
    try:
        env = {**os.environ, **_git.hardened_env()}
        done = subprocess.run(
            ["git", "credential", "fill"],
            input="protocol=https\nhost=example.org\n\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert "password=s3cret" in done.stdout, done.stderr
    finally:
        _git.use_credentials_file(None)
    assert "credential.helper" not in _git.hardened_env().values()


def settings_for(tmp_path: Path, **extra: str):  # type: ignore[no-untyped-def]
    return load_settings(
        {"MAO_DATA_DIR": str(tmp_path / "data"), "MAO_EXECUTOR_TOKEN": "x", "MAO_INSTANCE_NAME": "n",
         "MAO_ETCD_INSECURE": "1", **extra}
    )


def test_the_token_is_generated_once_privately_and_kept(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # as careless as a caller may be: the file is private anyway
    try:
        settings = ensure_api_token(settings_for(tmp_path))
    finally:
        os.umask(old_umask)
    path = tmp_path / "data" / "api-token"
    assert settings.api_token and settings.api_token_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_api_token(settings_for(tmp_path)).api_token == settings.api_token  # kept across starts
    path.chmod(0o644)
    ensure_api_token(settings_for(tmp_path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_api_token(settings_for(tmp_path, MAO_API_TOKEN="given")).api_token == "given"
    legacy = ensure_api_token(settings_for(tmp_path, MAO_API_LEGACY_OPEN="1"))
    assert legacy.api_token is None and legacy.api_legacy_open
    # maoctl finds it for a local URL only.
    assert local_token("http://127.0.0.1:8080", tmp_path / "data") == settings.api_token
    assert local_token("http://node1.example.org:8080", tmp_path / "data") is None


def test_tighten_makes_old_files_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    for name in ("mao.db", "mao.db-wal"):
        (data / name).write_text("")
        (data / name).chmod(0o644)
    tighten(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((data / n).stat().st_mode) == 0o600 for n in ("mao.db", "mao.db-wal"))
