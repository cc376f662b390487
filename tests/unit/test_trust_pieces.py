"""The pieces of the API's and the data's guards that need no server (docs/security.md)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctl.local_socket import route
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
        ("https://example.org/x.git?private_token=abc", True),
        ("https://example.org/x.git%3Faccess_token=abc", True),
        ("https://example.org?token=abc", True),
        ("https://example.org/x.git#token", True),
        ("https://tok%40en@example.org/x.git", True),
        ("ssh://git%3Apw@example.org/x.git", True),
        ("file:///srv/repos/x.git", False),
        ("/srv/repos/x.git", False),
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
    # maoctl finds it for a local URL only, and sends it only through the orchestrator's socket
    # (tests/unit/test_local_transports.py): with no socket there, no token at all.
    assert route("unix:///" + str(tmp_path / "data" / "api.sock"), None).token == settings.api_token
    no_socket = route("http://127.0.0.1:8080", None, tmp_path / "data")
    assert no_socket.token is None and no_socket.refusal and "api.sock" in no_socket.refusal
    assert route("http://node1.example.org:8080", None, tmp_path / "data").token is None


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


# -- credentials anywhere in a master URL, in any spelling (hypothesis) -----------------------------------
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_QUESTION = ("?", "%3F", "%3f", "%253F", "%25253f")
_HASH = ("#", "%23", "%2523")
_COLON = (":", "%3A", "%3a", "%253A")


@given(
    scheme=st.sampled_from(["http", "https", "HTTPS", "ssh", "git+ssh", "git", "file"]),
    host=_word,
    user=st.one_of(st.none(), _word),
    password=st.one_of(st.none(), _word),
    colon=st.sampled_from(_COLON),
    path=st.lists(_word, min_size=1, max_size=4),
    query=st.one_of(st.none(), st.tuples(st.sampled_from(_QUESTION), _word, _word)),
    fragment=st.one_of(st.none(), st.tuples(st.sampled_from(_HASH), _word)),
)
def test_credentials_in_any_part_of_a_master_url_are_refused(
    scheme: str,
    host: str,
    user: str | None,
    password: str | None,
    colon: str,
    path: list[str],
    query: tuple[str, str, str] | None,
    fragment: tuple[str, str] | None,
) -> None:
    userinfo = ""
    if user is not None:
        userinfo = user + (f"{colon}{password}" if password is not None else "") + "@"
    url = f"{scheme}://{userinfo}{host}/{'/'.join(path)}.git"
    if query is not None:
        url += f"{query[0]}{query[1]}={query[2]}"
    if fragment is not None:
        url += f"{fragment[0]}{fragment[1]}"
    carries = (
        query is not None
        or fragment is not None
        or (user is not None and (password is not None or scheme.lower() not in ("ssh", "git+ssh")))
    )
    problem = credentials_problem(url)
    assert (problem is not None) is carries, (url, problem)
    if carries:
        with pytest.raises(BadRequest) as refused:
            resolve_master(url, [Path("/nonexistent")])
        assert refused.value.code == "master_credentials"


@given(user=_word, password=st.one_of(st.none(), _word), host=_word, path=_word)
def test_scp_like_masters_carry_a_user_but_never_a_password(
    user: str, password: str | None, host: str, path: str
) -> None:
    master = f"{user}{':' + password if password is not None else ''}@{host}:{path}.git"
    assert (credentials_problem(master) is not None) is (password is not None)
