"""Executor settings: defaults, validation listing every problem at once, and the exit-2 contract."""

from __future__ import annotations

import json
import socket

import pytest

from executor.__main__ import main
from executor.config import host_is_loopback, load_settings
from executor.wire.images import image_problem, normalize_image
from orchestrator.errors import ConfigError

TOKEN = "unit-test-token-0123456789"


def _problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return info.value.problems


def test_defaults_with_only_a_token() -> None:
    settings = load_settings({"MAO_EXECUTOR_TOKEN": TOKEN})
    assert settings.token == TOKEN
    assert (settings.host, settings.port) == ("127.0.0.1", 8081)
    assert settings.instance == socket.gethostname()
    assert settings.docker_socket_images == frozenset()
    assert settings.docker_socket == "/var/run/docker.sock"
    assert settings.max_parallel == 8
    assert (settings.pull, settings.pull_timeout) == ("missing", 300.0)
    assert settings.log_level == "INFO"
    assert settings.is_loopback


def test_every_setting_is_read() -> None:
    settings = load_settings(
        {
            "MAO_EXECUTOR_TOKEN": TOKEN,
            "MAO_EXECUTOR_HOST": "0.0.0.0",
            "MAO_EXECUTOR_PORT": "9000",
            "MAO_INSTANCE_NAME": "node-a",
            "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES": " busybox , registry.example.org:5000/team/tool:1.2,",
            "MAO_EXECUTOR_DOCKER_SOCKET": "/run/docker.sock",
            "MAO_EXECUTOR_MAX_PARALLEL": "3",
            "MAO_EXECUTOR_PULL": "never",
            "MAO_EXECUTOR_PULL_TIMEOUT": "12.5",
            "MAO_LOG_LEVEL": "debug",
        }
    )
    assert (settings.host, settings.port, settings.instance) == ("0.0.0.0", 9000, "node-a")
    assert settings.docker_socket_images == {"busybox:latest", "registry.example.org:5000/team/tool:1.2"}
    assert settings.docker_socket == "/run/docker.sock"
    assert (settings.max_parallel, settings.pull, settings.pull_timeout) == (3, "never", 12.5)
    assert settings.log_level == "DEBUG"
    assert not settings.is_loopback


@pytest.mark.parametrize("token", [None, "", "   "])
def test_missing_or_blank_token(token: str | None) -> None:
    env = {} if token is None else {"MAO_EXECUTOR_TOKEN": token}
    problems = _problems(env)
    assert len(problems) == 1 and "MAO_EXECUTOR_TOKEN" in problems[0]


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "80.5"])
def test_bad_port(port: str) -> None:
    problems = _problems({"MAO_EXECUTOR_TOKEN": TOKEN, "MAO_EXECUTOR_PORT": port})
    assert len(problems) == 1 and "MAO_EXECUTOR_PORT" in problems[0] and port in problems[0]


def test_all_problems_are_listed_at_once() -> None:
    problems = _problems(
        {
            "MAO_EXECUTOR_PORT": "99999",
            "MAO_INSTANCE_NAME": "bad/name",
            "MAO_EXECUTOR_DOCKER_SOCKET_IMAGES": "busybox,-evil,has space",
            "MAO_EXECUTOR_DOCKER_SOCKET": "relative.sock",
            "MAO_EXECUTOR_MAX_PARALLEL": "0",
            "MAO_EXECUTOR_PULL": "always",
            "MAO_EXECUTOR_PULL_TIMEOUT": "-5",
            "MAO_LOG_LEVEL": "loud",
        }
    )
    expected = [
        "MAO_EXECUTOR_TOKEN",
        "MAO_EXECUTOR_PORT",
        "MAO_INSTANCE_NAME",
        "'-evil'",
        "'has space'",
        "MAO_EXECUTOR_DOCKER_SOCKET must",
        "MAO_EXECUTOR_MAX_PARALLEL",
        "MAO_EXECUTOR_PULL must",
        "MAO_EXECUTOR_PULL_TIMEOUT",
        "MAO_LOG_LEVEL",
    ]
    assert len(problems) == len(expected), problems
    for needle, problem in zip(expected, problems, strict=True):
        assert needle in problem


def test_describe_masks_the_token() -> None:
    described = load_settings({"MAO_EXECUTOR_TOKEN": TOKEN}).describe()
    assert TOKEN not in json.dumps(described)
    assert described["MAO_EXECUTOR_TOKEN"] == "***"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.1.2.3", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert host_is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("reference", "normal"),
    [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("docker.io/library/busybox", "busybox:latest"),
        ("library/busybox:latest", "busybox:latest"),
        ("docker.io/team/tool", "team/tool:latest"),
        ("registry:5000/tool", "registry:5000/tool:latest"),
        ("tool@sha256:" + "a" * 64, "tool@sha256:" + "a" * 64),
    ],
)
def test_image_normal_form_for_the_allow_list(reference: str, normal: str) -> None:
    assert image_problem(reference) is None
    assert normalize_image(reference) == normal


@pytest.mark.parametrize("reference", ["", "-v", "busybox latest", "a\tb", "img;rm", 5])
def test_bad_image_references(reference: object) -> None:
    assert image_problem(reference) is not None


def test_main_exits_2_listing_every_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("MAO_EXECUTOR_TOKEN", raising=False)
    monkeypatch.setenv("MAO_EXECUTOR_PORT", "nope")
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "MAO_EXECUTOR_TOKEN" in err and "MAO_EXECUTOR_PORT" in err
    assert "Traceback" not in err


def test_check_config_prints_settings_with_token_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MAO_EXECUTOR_TOKEN", TOKEN)
    monkeypatch.setenv("MAO_EXECUTOR_PORT", "8099")
    assert main(["--check-config"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    assert json.loads(out)["MAO_EXECUTOR_PORT"] == 8099


def test_check_config_exits_2_on_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAO_EXECUTOR_TOKEN", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["--check-config"])
    assert info.value.code == 2
