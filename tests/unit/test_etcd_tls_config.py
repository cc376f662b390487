"""etcd's TLS settings: all three files or none, readable, a private key; plain HTTP only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctl import pki
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"MAO_DATA_DIR": str(tmp_path / "data"), "MAO_EXECUTOR_TOKEN": "secret", "MAO_INSTANCE_NAME": "n1"}


@pytest.fixture(scope="module")
def member_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca = pki.create_authority("test")
    pki.save_member(pki.member_certificates(ca, "n1", "10.0.0.1"), directory)
    return directory


def tls_env(tmp_path: Path, directory: Path) -> dict[str, str]:
    return {
        **base_env(tmp_path),
        "MAO_ETCD_CA": str(directory / pki.CA_CERT),
        "MAO_ETCD_CERT": str(directory / pki.CLIENT_CERT),
        "MAO_ETCD_KEY": str(directory / pki.CLIENT_KEY),
    }


def problems(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return "\n".join(caught.value.problems)


def test_plain_http_needs_the_explicit_switch(tmp_path: Path) -> None:
    assert "MAO_ETCD_INSECURE=1" in problems(base_env(tmp_path))
    settings = load_settings({**base_env(tmp_path), "MAO_ETCD_INSECURE": "1"})
    assert settings.etcd_insecure and settings.etcd_ca is None
    assert "must be 1 or 0" in problems({**base_env(tmp_path), "MAO_ETCD_INSECURE": "maybe"})
    https = {**base_env(tmp_path), "MAO_ETCD_INSECURE": "1", "MAO_ETCD_ENDPOINTS": "https://10.0.0.1:2379"}
    assert "https://" in problems(https)


def test_tls_files_are_taken(tmp_path: Path, member_dir: Path) -> None:
    settings = load_settings(tls_env(tmp_path, member_dir))
    assert settings.etcd_ca == member_dir / pki.CA_CERT and not settings.etcd_insecure
    assert settings.describe()["MAO_ETCD_KEY"] == str(member_dir / pki.CLIENT_KEY)
    with_scheme = {
        **tls_env(tmp_path, member_dir),
        "MAO_ETCD_ENDPOINTS": "https://10.0.0.1:2379,10.0.0.2:2379",
    }
    assert load_settings(with_scheme).etcd_endpoints == (("10.0.0.1", 2379), ("10.0.0.2", 2379))


def test_all_three_or_none(tmp_path: Path, member_dir: Path) -> None:
    env = tls_env(tmp_path, member_dir)
    del env["MAO_ETCD_KEY"]
    assert "missing: MAO_ETCD_KEY" in problems(env)


def test_tls_and_plain_together_is_refused(tmp_path: Path, member_dir: Path) -> None:
    assert "contradicts" in problems({**tls_env(tmp_path, member_dir), "MAO_ETCD_INSECURE": "1"})
    plain_url = {**tls_env(tmp_path, member_dir), "MAO_ETCD_ENDPOINTS": "http://10.0.0.1:2379"}
    assert "http:// endpoints" in problems(plain_url)


def test_unreadable_or_not_pem_files_are_named(tmp_path: Path, member_dir: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    text = problems({**tls_env(tmp_path, member_dir), "MAO_ETCD_CA": str(not_pem)})
    assert f"MAO_ETCD_CA={not_pem} is not a PEM file" in text
    text = problems({**tls_env(tmp_path, member_dir), "MAO_ETCD_CERT": str(tmp_path / "absent.crt")})
    assert "MAO_ETCD_CERT" in text and "cannot be read" in text


def test_a_key_readable_by_others_is_refused(tmp_path: Path, member_dir: Path) -> None:
    key = tmp_path / "client.key"
    key.write_bytes((member_dir / pki.CLIENT_KEY).read_bytes())
    key.chmod(0o644)
    text = problems({**tls_env(tmp_path, member_dir), "MAO_ETCD_KEY": str(key)})
    assert "readable by others" in text and "chmod 600" in text
    key.chmod(0o600)
    assert load_settings({**tls_env(tmp_path, member_dir), "MAO_ETCD_KEY": str(key)}).etcd_key == key
