"""check_master, redaction and the hardened git environment."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from orchestrator.datasets import check_master, redact
from orchestrator.datasets._git import hardened_env, run_git, summarize
from orchestrator.errors import GitError


@pytest.mark.parametrize(
    "master",
    [
        "git-link",
        "/abs/path/repo.git",
        "https://x/y.git",
        "http://host:8080/a/b.git",
        "ssh://git@host:22/org/repo.git",
        "ssh://[::1]/repo.git",
        "git://host/repo.git",
        "file:///srv/repo.git",
        "git@host:org/repo.git",
        "relative/dir",
    ],
)
def test_check_master_accepts(master: str) -> None:
    assert check_master(master) is None


@pytest.mark.parametrize(
    "master",
    [
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh",
        "fd::3",
        "transport::address",
        "-uhack",
        "--upload-pack=touch /tmp/x",
        "",
        "has space",
        "tab\there",
        "line\nbreak",
        "nul\0byte",
        "ssh://-oProxyCommand=x/repo",
        "ssh://user@-oProxyCommand=x/repo",
        "user@-oProxyCommand=x:repo",
        "foo://host/repo",
        "x" * 3000,
    ],
)
def test_check_master_rejects(master: str) -> None:
    assert check_master(master)


def test_check_master_non_string() -> None:
    assert check_master(None)


def test_redact() -> None:
    assert redact("fatal: unable to access 'https://user:tok@host/x.git/'") == (
        "fatal: unable to access 'https://***@host/x.git/'"
    )
    assert redact("https://token@github.com/a") == "https://***@github.com/a"
    assert redact("git@host:org/repo.git") == "git@host:org/repo.git"  # no secret in scp-like form


def test_summarize_keeps_last_lines_without_hints() -> None:
    text = "\n".join([f"line {i}" for i in range(10)] + ["hint: do this", "fatal: boom"])
    assert summarize(text) == "line 7 | line 8 | line 9 | fatal: boom"
    assert summarize("") == "no error output"


def test_hardened_env() -> None:
    env = hardened_env({"GIT_DIR": "/x"})
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["GIT_PROTOCOL_FROM_USER"] == "0"
    assert env["GIT_ASKPASS"] == "" and env["LC_ALL"] == "C" and env["GIT_DIR"] == "/x"
    keys = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert keys["protocol.ext.allow"] == "never"


def test_hardened_env_honours_ssh_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -i /keys/id")
    assert "GIT_SSH_COMMAND" not in hardened_env()  # inherited unchanged by GitPython
    monkeypatch.delenv("GIT_SSH_COMMAND")
    monkeypatch.delenv("GIT_SSH", raising=False)
    assert "BatchMode=yes" in hardened_env()["GIT_SSH_COMMAND"]


@pytest.mark.parametrize("url", ["ext::sh -c touch% {marker}", "fd::0", "nothere::{marker}"])
def test_remote_helpers_cannot_run_even_unchecked(tmp_path: Path, url: str) -> None:
    """Even if a bad master slipped past check_master, git itself refuses the transport."""
    marker = tmp_path / "pwned"
    with pytest.raises(GitError, match="not allowed"):
        run_git(
            git.Git(str(tmp_path)), ["ls-remote", url.format(marker=marker)], env=hardened_env(), what="probe"
        )
    assert not marker.exists()


def test_run_git_error_message(tmp_path: Path) -> None:
    with pytest.raises(GitError) as info:
        run_git(
            git.Git(str(tmp_path)),
            ["rev-parse", "--verify", "refs/heads/nope"],
            env=hardened_env({"GIT_DIR": str(tmp_path / "missing.git")}),
            what="resolve a ref",
            prefix="dataset 'ds': ",
        )
    assert info.value.message.startswith("dataset 'ds': could not resolve a ref: ")
