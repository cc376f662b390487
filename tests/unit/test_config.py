import socket
from pathlib import Path

import pytest

from orchestrator.config import load_settings, read_env_file
from orchestrator.errors import ConfigError


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "MAO_DATA_DIR": str(tmp_path / "data"),
        "MAO_EXECUTOR_TOKEN": "secret",
        "MAO_INSTANCE_NAME": "node1",
        "MAO_ETCD_INSECURE": "1",
    }


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(base_env(tmp_path))
    assert settings.api_host == "127.0.0.1" and settings.api_port == 8080
    assert settings.etcd_endpoints == (("127.0.0.1", 2379),)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'mao.db'}"
    # The executor's private socket in the data dir, and this API's own beside the token file.
    assert settings.executor_url == f"unix://{tmp_path / 'data' / 'executor' / 'executor.sock'}"
    assert settings.api_socket == tmp_path / "data" / "api.sock"
    assert not settings.executor_insecure_tcp and settings.executor_fingerprint is None
    assert settings.host_data_dir == settings.data_dir
    assert settings.describe()["MAO_EXECUTOR_TOKEN"] == "***"


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    env = {
        "MAO_DATA_DIR": str(blocked / "data"),
        "MAO_API_HOST": "0.0.0.0",
        "MAO_API_LEGACY_OPEN": "1",
        "MAO_API_PORT": "99999",
        "MAO_EXECUTOR_URL": "ftp:/nowhere",
        "MAO_ETCD_ENDPOINTS": "etcd1,etcd2:2379",
        "MAO_INSTANCE_NAME": "../evil",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    text = "\n".join(caught.value.problems)
    for expected in (
        "MAO_EXECUTOR_TOKEN",
        "MAO_API_LEGACY_OPEN=1",
        "MAO_API_PORT",
        "MAO_EXECUTOR_URL",
        "'etcd1'",
        "MAO_DATA_DIR",
        "MAO_INSTANCE_NAME",
        "MAO_ETCD_INSECURE=1",  # neither TLS files nor the explicit plain-HTTP switch
    ):
        assert expected in text
    assert len(caught.value.problems) == 8


def test_non_loopback_api_needs_token(tmp_path: Path) -> None:
    settings = load_settings({**base_env(tmp_path), "MAO_API_HOST": "0.0.0.0", "MAO_API_TOKEN": "t"})
    assert settings.api_token == "t"
    # Without MAO_API_TOKEN the orchestrator generates one at start (private_files), never none.
    assert load_settings({**base_env(tmp_path), "MAO_API_HOST": "0.0.0.0"}).api_token is None


def test_trust_settings(tmp_path: Path) -> None:
    settings = load_settings({**base_env(tmp_path), "MAO_ADVERTISE_URL": "http://node1.example.org:8080"})
    assert {"localhost", "127.0.0.1", "::1", "0.0.0.0", "node1.example.org"} <= set(settings.api_hostnames)
    assert settings.master_roots == ((tmp_path / "data" / "repos").resolve(),)
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    given = load_settings(
        {**base_env(tmp_path), "MAO_API_HOSTNAMES": "mao.example.org", "MAO_MASTER_ROOTS": "/srv/git"}
    )
    assert given.api_hostnames == ("mao.example.org",) and given.master_roots == (Path("/srv/git"),)
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                **base_env(tmp_path),
                "MAO_API_LEGACY_OPEN": "1",
                "MAO_API_TOKEN": "t",
                "MAO_MASTER_ROOTS": "rel",
            }
        )
    assert len(caught.value.problems) == 2


def test_several_etcd_endpoints_and_urls(tmp_path: Path) -> None:
    settings = load_settings({**base_env(tmp_path), "MAO_ETCD_ENDPOINTS": "http://10.0.0.1:2379, etcd:2379"})
    assert settings.etcd_endpoints == (("10.0.0.1", 2379), ("etcd", 2379))


def test_config_file_fills_in_what_env_does_not_set(tmp_path: Path) -> None:
    config = tmp_path / "mao.env"
    config.write_text(
        "# generated\nMAO_EXECUTOR_TOKEN='from-file'\nMAO_API_PORT=9000\nexport MAO_LABELS=role=central,site=zurich\n"
    )
    settings = load_settings(
        {
            "MAO_CONFIG_FILE": str(config),
            "MAO_DATA_DIR": str(tmp_path),
            "MAO_API_PORT": "9100",
            "MAO_ETCD_INSECURE": "1",
        }
    )
    assert settings.executor_token == "from-file"
    assert settings.api_port == 9100
    assert settings.labels == {"role": "central", "site": "zurich"}


def test_read_env_file_does_no_shell_expansion(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text('A="$(rm -rf /)"\nB=plain\n')
    assert read_env_file(path) == {"A": "$(rm -rf /)", "B": "plain"}


def test_host_path_maps_into_host_data_dir(tmp_path: Path) -> None:
    settings = load_settings({**base_env(tmp_path), "MAO_HOST_DATA_DIR": "/srv/mao/data"})
    assert settings.host_path(settings.data_dir / "work" / "x") == Path("/srv/mao/data/work/x")


def test_advertise_url_and_member_ttl(tmp_path: Path) -> None:
    settings = load_settings({**base_env(tmp_path), "MAO_API_PORT": "9001"})
    assert settings.advertise_url == "http://127.0.0.1:9001" and settings.member_ttl == 10
    wildcard = load_settings({**base_env(tmp_path), "MAO_API_HOST": "0.0.0.0", "MAO_API_TOKEN": "t"})
    assert wildcard.advertise_url == f"http://{socket.gethostname()}:8080"
    given = load_settings(
        {**base_env(tmp_path), "MAO_ADVERTISE_URL": "https://mao.example.org/", "MAO_MEMBER_TTL": "3"}
    )
    assert given.advertise_url == "https://mao.example.org" and given.member_ttl == 3
    assert given.describe()["MAO_ADVERTISE_URL"] == "https://mao.example.org"
    with pytest.raises(ConfigError) as caught:
        load_settings({**base_env(tmp_path), "MAO_ADVERTISE_URL": "mao.example.org", "MAO_MEMBER_TTL": "1"})
    assert [p.split("=")[0] for p in caught.value.problems] == ["MAO_ADVERTISE_URL", "MAO_MEMBER_TTL"]


def test_gateway_settings(tmp_path: Path) -> None:
    settings = load_settings(base_env(tmp_path))
    assert (settings.raw_ttl, settings.raw_dataset, settings.gateway_rate, settings.gateway_burst) == (
        60,
        None,
        5.0,
        10,
    )
    assert (settings.raw_batch_seconds, settings.raw_batch_size) == (5.0, 100)
    custom = load_settings({**base_env(tmp_path), "MAO_RAW_TTL": "3", "MAO_RAW_DATASET": "raw-entries"})
    assert custom.raw_ttl == 3 and custom.raw_dataset == "raw-entries"
    assert custom.describe()["MAO_RAW_DATASET"] == "raw-entries"
    bad = {
        **base_env(tmp_path),
        "MAO_RAW_TTL": "1",
        "MAO_RAW_DATASET": "../etc",
        "MAO_GATEWAY_RATE": "fast",
        "MAO_RAW_BATCH_SIZE": "0",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    text = "\n".join(caught.value.problems)
    for expected in ("MAO_RAW_TTL=1", "MAO_RAW_DATASET", "MAO_GATEWAY_RATE='fast'", "MAO_RAW_BATCH_SIZE=0"):
        assert expected in text


def test_unparseable_urls_are_problems_not_tracebacks(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "MAO_EXECUTOR_URL": "http://[::1", "MAO_ADVERTISE_URL": "http://[::1:8080"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    text = "\n".join(caught.value.problems)
    assert "MAO_EXECUTOR_URL" in text and "MAO_ADVERTISE_URL" in text


def test_admission_settings(tmp_path: Path) -> None:
    defaults = load_settings(base_env(tmp_path))
    assert defaults.max_active_runs is None and defaults.pools == {}
    given = load_settings({**base_env(tmp_path), "MAO_MAX_ACTIVE_RUNS": "2", "MAO_POOLS": "gpu=1,heavy=2"})
    assert given.max_active_runs == 2 and given.pools == {"gpu": 1, "heavy": 2}
    assert given.describe()["MAO_POOLS"] == "gpu=1,heavy=2"
    assert load_settings({**base_env(tmp_path), "MAO_MAX_ACTIVE_RUNS": "0"}).max_active_runs is None
    with pytest.raises(ConfigError) as caught:
        load_settings({**base_env(tmp_path), "MAO_MAX_ACTIVE_RUNS": "two", "MAO_POOLS": "gpu:1,heavy=2"})
    text = "\n".join(caught.value.problems)
    assert "MAO_MAX_ACTIVE_RUNS='two'" in text and "MAO_POOLS: 'gpu:1' is not name=slots" in text
    assert len(caught.value.problems) == 2
