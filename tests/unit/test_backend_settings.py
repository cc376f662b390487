"""``MAO_BACKENDS``, ``MAO_DEFAULT_BACKEND`` and ``MAO_BACKEND_<NAME>_<KEY>`` (executors/registry.py):
validated at start with every problem listed, each backend's settings by its kind's model."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config import load_settings
from orchestrator.config.backends.docker import DockerSettings
from orchestrator.config.backends.kinds import KINDS, parse_backends, variable_prefix
from orchestrator.errors import ConfigError
from orchestrator.executors.backends import Backends, UnknownBackend
from orchestrator.executors.docker import DockerBackend


def base(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1", "MAO_EXECUTOR_TOKEN": "t0k", **extra}


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


def test_the_default_is_one_local_docker_backend_on_the_executor(tmp_path: Path) -> None:
    settings = load_settings(base(tmp_path))
    ((backend),) = settings.backends
    assert (backend.name, backend.kind, settings.default_backend) == ("local", "docker", "local")
    assert isinstance(backend.settings, DockerSettings)
    assert backend.settings.url is None and backend.settings.token == "t0k"  # the instance's executor
    assert backend.fallbacks == {"MAO_EXECUTOR_TOKEN"}
    built_one = Backends.build(settings).get("local")
    assert isinstance(built_one, DockerBackend) and built_one.url == settings.executor_url.rstrip("/")
    assert settings.executor_url.startswith("unix://")  # its socket, by default
    described = settings.describe()
    assert described["MAO_BACKENDS"] == "local=docker" and described["MAO_DEFAULT_BACKEND"] == "local"
    assert described["MAO_BACKEND_LOCAL_TOKEN"] == "***"  # never the secret
    built = Backends.build(settings)
    assert isinstance(built.get(None), DockerBackend) and built.get("local") is built.get(None)
    with pytest.raises(UnknownBackend):
        built.get("nowhere")


def test_backends_their_settings_and_the_default(tmp_path: Path) -> None:
    env = base(
        tmp_path,
        MAO_BACKENDS="local=docker, other-host=docker",
        MAO_DEFAULT_BACKEND="other-host",
        MAO_BACKEND_OTHER_HOST_URL="https://10.0.0.2:8081",
        MAO_BACKEND_OTHER_HOST_TLS_FINGERPRINT="ab" * 32,
        MAO_BACKEND_OTHER_HOST_TOKEN="theirs",
        MAO_BACKEND_OTHER_HOST_START_TIMEOUT="30",
    )
    settings = load_settings(env)
    local, other = settings.backends
    assert settings.default_backend == "other-host"
    assert isinstance(other.settings, DockerSettings)
    assert (other.settings.url, other.settings.token, other.settings.start_timeout) == (
        "https://10.0.0.2:8081", "theirs", 30.0,
    )  # fmt: skip
    assert other.settings.fingerprint() == bytes.fromhex("ab" * 32)
    assert other.fallbacks == frozenset() and local.fallbacks  # its own values, not the executor's


def test_the_same_keys_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "mao.env"
    config.write_text("MAO_BACKENDS=local=docker\nMAO_BACKEND_LOCAL_START_TIMEOUT=12\n")
    settings = load_settings(base(tmp_path, MAO_CONFIG_FILE=str(config)))
    assert isinstance(settings.backends[0].settings, DockerSettings)
    assert settings.backends[0].settings.start_timeout == 12.0


def test_every_problem_is_listed_naming_its_variable(tmp_path: Path) -> None:
    env = base(
        tmp_path,
        MAO_BACKENDS="local=docker,local=docker,Bad=docker,x=quantum,novalue",
        MAO_DEFAULT_BACKEND="elsewhere",
        MAO_BACKEND_LOCAL_START_TIMEOUT="-1",
        MAO_BACKEND_LOCAL_COLOUR="blue",
        MAO_BACKEND_GHOST_URL="http://x",
    )
    text = "\n".join(problems_of(env))
    for expected in (
        "backend 'local' is given twice",
        "backend name 'Bad'",
        "kind 'quantum'",
        "'novalue' is not name=kind",
        "MAO_DEFAULT_BACKEND='elsewhere'",
        "MAO_BACKEND_LOCAL_COLOUR is not a setting of kind docker",
        "MAO_BACKEND_GHOST_URL: no backend",
    ):
        assert expected in text, (expected, text)


def test_a_bad_value_names_the_backends_variable(tmp_path: Path) -> None:
    text = "\n".join(problems_of(base(tmp_path, MAO_BACKEND_LOCAL_START_TIMEOUT="soon")))
    assert "MAO_BACKEND_LOCAL_START_TIMEOUT" in text
    for url in ("ftp://x", "http://10.0.0.2:8081", "unix://relative.sock"):
        text = "\n".join(problems_of(base(tmp_path, MAO_BACKEND_LOCAL_URL=url)))
        assert "MAO_BACKEND_LOCAL_URL" in text or "MAO_BACKEND_LOCAL_" in text, (url, text)
    # https only with the executor's certificate pinned (docs/security.md#transports).
    text = "\n".join(problems_of(base(tmp_path, MAO_BACKEND_LOCAL_URL="https://10.0.0.2:8081")))
    assert "TLS_FINGERPRINT" in text
    text = "\n".join(problems_of(base(tmp_path, MAO_BACKEND_LOCAL_TLS_FINGERPRINT="nope")))
    assert "SHA-256" in text


def test_a_docker_backend_without_a_token_names_the_executors(tmp_path: Path) -> None:
    env = {k: v for k, v in base(tmp_path).items() if k != "MAO_EXECUTOR_TOKEN"}
    (problem,) = [p for p in problems_of(env) if "TOKEN" in p]
    assert "MAO_EXECUTOR_TOKEN is not set (nor MAO_BACKEND_LOCAL_TOKEN)" in problem
    # Its own token is enough.
    assert load_settings({**env, "MAO_BACKEND_LOCAL_TOKEN": "own"}).backends[0].settings.token == "own"  # type: ignore[attr-defined]


def test_a_variable_goes_to_the_backend_with_the_longest_matching_name() -> None:
    environ = {
        "MAO_BACKENDS": "a=docker,a-b=docker",
        "MAO_BACKEND_A_B_START_TIMEOUT": "5",
        "MAO_BACKEND_A_START_TIMEOUT": "7",
        "MAO_EXECUTOR_TOKEN": "t",
    }
    problems: list[str] = []
    backends, _ = parse_backends(environ.get, environ, problems)
    assert problems == []
    timeouts = {b.name: b.settings.start_timeout for b in backends}  # type: ignore[attr-defined]
    assert timeouts == {"a": 7.0, "a-b": 5.0}


@given(st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True))
def test_any_valid_name_gets_its_own_variables(name: str) -> None:
    prefix = variable_prefix(name)
    environ = {"MAO_BACKENDS": f"{name}=docker", f"{prefix}START_TIMEOUT": "9", "MAO_EXECUTOR_TOKEN": "t"}
    problems: list[str] = []
    backends, default = parse_backends(environ.get, environ, problems)
    assert problems == [] and default == name
    assert backends[0].settings.start_timeout == 9.0  # type: ignore[attr-defined]


@given(st.text(min_size=1, max_size=40).filter(lambda s: "," not in s and "=" not in s))
def test_a_name_outside_the_rule_is_refused_never_a_crash(name: str) -> None:
    environ = {"MAO_BACKENDS": f"{name}=docker", "MAO_EXECUTOR_TOKEN": "t"}
    problems: list[str] = []
    backends, _ = parse_backends(environ.get, environ, problems)
    if problems:
        assert backends == ()
    else:
        assert backends[0].name == name.strip()


def test_every_kind_has_a_strict_settings_model() -> None:
    for kind, spec in KINDS.items():
        assert spec.settings.model_config.get("extra") == "forbid", kind
        assert set(spec.fallback) <= set(spec.settings.model_fields), kind
