"""``maoctl instance install`` without questions: ``--answers FILE`` and flags."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from ctl import pki
from ctl.env_files import parse_env
from ctl.join_bundle import issue_bundle, save_bundle
from ctl.stack import start_hint
from orchestrator.config import load_settings
from tests.ctl_helpers import maoctl

URL = "http://127.0.0.1:9"  # never called: installing needs no orchestrator


def install(*args: str) -> Any:
    return maoctl(URL, "instance", "install", *args)


def read_install(directory: Path) -> tuple[dict[str, Any], dict[str, str]]:
    compose = yaml.safe_load((directory / "docker-compose.yaml").read_text())
    return compose, parse_env((directory / "mao.env").read_text())


def test_answers_file_writes_a_standalone_instance(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    answers = tmp_path / "answers.yaml"
    answers.write_text(
        yaml.safe_dump(
            {
                "join": False,
                "directory": str(directory),
                "name": "alpha",
                "ip": "10.0.0.1",
                "git_email": "ops@alpha.org",
                "labels": {"site": "lab"},
            }
        )
    )
    result = install("--answers", str(answers))
    assert result.exit_code == 0, result.output
    assert start_hint(directory) in result.stdout
    assert "MAO_API_TOKEN" in result.stdout and f"export MAO_URL=unix://{directory}/data/api.sock" in result.stdout

    env_file = directory / "mao.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    for folder in ("data", "etcd", "postgres"):
        assert (directory / folder).is_dir()
    compose, env = read_install(directory)
    etcd = compose["services"]["etcd"]["environment"]
    assert etcd == {
        "ETCD_NAME": "alpha",
        "ETCD_DATA_DIR": "/etcd-data",
        "ETCD_LISTEN_PEER_URLS": "https://10.0.0.1:2380",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": "https://10.0.0.1:2380",
        "ETCD_LISTEN_CLIENT_URLS": "https://127.0.0.1:2379,https://10.0.0.1:2379",
        "ETCD_ADVERTISE_CLIENT_URLS": "https://10.0.0.1:2379",
        "ETCD_INITIAL_CLUSTER": "alpha=https://10.0.0.1:2380",
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_TRUSTED_CA_FILE": "/etc/mao/pki/ca.crt",
        "ETCD_CERT_FILE": "/etc/mao/pki/etcd.crt",
        "ETCD_KEY_FILE": "/etc/mao/pki/etcd.key",
        "ETCD_PEER_CLIENT_CERT_AUTH": "true",
        "ETCD_PEER_TRUSTED_CA_FILE": "/etc/mao/pki/ca.crt",
        "ETCD_PEER_CERT_FILE": "/etc/mao/pki/etcd.crt",
        "ETCD_PEER_KEY_FILE": "/etc/mao/pki/etcd.key",
    }
    assert f"{directory / 'pki'}:/etc/mao/pki:ro" in compose["services"]["etcd"]["volumes"]
    # A new federation: its CA stays in ca/ (never mounted), this instance's certificates are in pki/.
    assert all(
        str(directory / "ca") not in v for s in compose["services"].values() for v in s.get("volumes", [])
    )
    assert stat.S_IMODE((directory / "ca" / "ca.key").stat().st_mode) == 0o600
    for key in ("etcd.key", "client.key"):
        assert stat.S_IMODE((directory / "pki" / key).stat().st_mode) == 0o600
    ips, _ = pki.certificate_names((directory / "pki" / "etcd.crt").read_bytes())
    assert "10.0.0.1" in ips and "127.0.0.1" in ips
    assert env["MAO_INSTANCE_NAME"] == "alpha" and env["MAO_GIT_EMAIL"] == "ops@alpha.org"
    assert env["MAO_LABELS"] == "site=lab"
    for key in ("MAO_API_TOKEN", "MAO_EXECUTOR_TOKEN"):
        assert len(env[key]) >= 32
    password = parse_env((directory / "postgres.env").read_text())["POSTGRES_PASSWORD"]
    assert len(password) >= 32 and "POSTGRES_PASSWORD" not in env
    assert env["MAO_DATABASE_URL"] == f"postgresql+asyncpg://mao:{password}@127.0.0.1:5433/mao"

    # What the orchestrator container sees (compose environment over mao.env) is a valid configuration.
    container_env = {**env, **compose["services"]["orchestrator"]["environment"]}
    container_env["MAO_DATA_DIR"] = container_env["MAO_HOST_DATA_DIR"] = str(directory / "data")
    for key in ("MAO_ETCD_CA", "MAO_ETCD_CERT", "MAO_ETCD_KEY"):  # the mount, as the host sees it
        container_env[key] = container_env[key].replace("/etc/mao/pki", str(directory / "pki"))
    settings = load_settings(container_env)
    assert settings.etcd_key == directory / "pki" / "client.key"
    assert settings.instance_name == "alpha" and settings.database_url.startswith("postgresql+asyncpg://")
    assert compose["services"]["orchestrator"]["environment"]["MAO_DATA_DIR"] == str(directory / "data")


def write_bundle(tmp_path: Path, name: str, ip: str, cluster: str) -> tuple[Path, pki.Authority]:
    ca = pki.create_authority("testfed")
    path = tmp_path / f"{name}-join.json"
    save_bundle(issue_bundle(ca, name, f"https://{ip}:2380", cluster), path)
    return path, ca


def test_flags_join_an_existing_cluster(tmp_path: Path) -> None:
    directory = tmp_path / "beta"
    cluster = "alpha=https://10.0.0.1:2380,beta=https://10.0.0.2:2380"
    bundle, ca = write_bundle(tmp_path, "beta", "10.0.0.2", cluster)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600  # it holds private keys
    result = install(
        "--non-interactive",
        "--join",
        "--join-bundle",
        str(bundle),
        "--dir",
        str(directory),
        "--ssh-dir",
        str(tmp_path),
        "--json",
    )  # name and IP come from the bundle
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["etcd_initial_cluster_state"] == "existing" and summary["peer_url"] == "https://10.0.0.2:2380"
    )
    assert summary["ca_dir"] is None and not (directory / "ca").exists()
    compose, env = read_install(directory)
    etcd = compose["services"]["etcd"]["environment"]
    assert etcd["ETCD_INITIAL_CLUSTER"] == cluster and etcd["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert etcd["ETCD_NAME"] == "beta" and etcd["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == "https://10.0.0.2:2380"
    assert etcd["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    # The certificates are the bundle's, issued by the federation's CA.
    assert (directory / "pki" / "ca.crt").read_bytes() == ca.cert_pem
    for name in ("etcd.crt", "client.crt"):
        cert = x509.load_pem_x509_certificate((directory / "pki" / name).read_bytes())
        cert.verify_directly_issued_by(ca.cert)
    assert stat.S_IMODE((directory / "pki" / "etcd.key").stat().st_mode) == 0o600
    assert f"{tmp_path}:/home/mao/.ssh:ro" in compose["services"]["orchestrator"]["volumes"]
    assert env["MAO_GIT_EMAIL"].endswith("@beta")


def test_rerun_keeps_files_unless_told_and_then_keeps_the_secrets(tmp_path: Path) -> None:
    args = ("--non-interactive", "--dir", str(tmp_path), "--name", "alpha", "--ip", "127.0.0.1")
    assert install(*args).exit_code == 0
    _, first = read_install(tmp_path)
    refused = install(*args, "--name", "renamed")
    assert refused.exit_code == 1 and "already holds docker-compose.yaml, mao.env" in refused.stderr
    assert read_install(tmp_path)[1] == first
    assert install(*args, "--name", "renamed", "--yes").exit_code == 0
    _, second = read_install(tmp_path)
    assert second["MAO_INSTANCE_NAME"] == "renamed"
    assert all(second[k] == first[k] for k in ("MAO_DATABASE_URL", "MAO_API_TOKEN", "MAO_EXECUTOR_TOKEN"))


def secrets_of(directory: Path) -> dict[str, dict[str, str]]:
    return {
        name: parse_env((directory / name).read_text())
        for name in ("mao.env", "executor.env", "postgres.env")
    }


def test_each_container_receives_only_the_secrets_it_needs(tmp_path: Path) -> None:
    """PostgreSQL gets its password, the executor its token, etcd nothing; only the orchestrator gets
    the API token. Each file is 0600, owned by the installing user."""
    assert (
        install("--non-interactive", "--dir", str(tmp_path), "--name", "alpha", "--ip", "127.0.0.1").exit_code
        == 0
    )
    compose, _ = read_install(tmp_path)
    files = secrets_of(tmp_path)
    services = compose["services"]
    assert services["orchestrator"]["env_file"] == ["mao.env"]
    assert services["executor"]["env_file"] == ["executor.env"]
    assert services["postgres"]["env_file"] == ["postgres.env"]
    assert "env_file" not in services["etcd"]
    api_token, executor_token = files["mao.env"]["MAO_API_TOKEN"], files["mao.env"]["MAO_EXECUTOR_TOKEN"]
    password = files["postgres.env"]["POSTGRES_PASSWORD"]
    assert files["executor.env"] == {"MAO_EXECUTOR_TOKEN": executor_token}
    assert files["postgres.env"] == {"POSTGRES_PASSWORD": password}
    assert password in files["mao.env"]["MAO_DATABASE_URL"] and "POSTGRES_PASSWORD" not in files["mao.env"]
    # What each container's environment holds: its env file under the compose file's environment.
    for service, definition in services.items():
        seen = " ".join(
            [*(Path(tmp_path / f).read_text() for f in definition.get("env_file", [])),
             *map(str, (definition.get("environment") or {}).values())]
        )  # fmt: skip
        assert (api_token in seen) == (service == "orchestrator"), service
        assert (password in seen) == (service in ("orchestrator", "postgres")), service
        assert (executor_token in seen) == (service in ("orchestrator", "executor")), service
    for name in files:
        info = (tmp_path / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid(), name


def test_rerun_over_an_install_from_before_the_split_keeps_its_secrets(tmp_path: Path) -> None:
    """An older install kept every secret in mao.env (PostgreSQL's password too): installing again
    over it splits them and keeps the values, so its database stays readable."""
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    (tmp_path / "mao.env").write_text(
        "MAO_INSTANCE_NAME=alpha\nMAO_API_TOKEN=old-api-token\nMAO_EXECUTOR_TOKEN=old-executor-token\n"
        "POSTGRES_PASSWORD=old-password\n"
        "MAO_DATABASE_URL=postgresql+asyncpg://mao:old-password@127.0.0.1:5433/mao\n"
    )
    args = ("--non-interactive", "--dir", str(tmp_path), "--name", "alpha", "--ip", "127.0.0.1", "--yes")
    assert install(*args).exit_code == 0
    files = secrets_of(tmp_path)
    assert files["postgres.env"]["POSTGRES_PASSWORD"] == "old-password"
    assert (
        files["executor.env"]["MAO_EXECUTOR_TOKEN"]
        == files["mao.env"]["MAO_EXECUTOR_TOKEN"]
        == "old-executor-token"
    )
    assert (
        files["mao.env"]["MAO_API_TOKEN"] == "old-api-token" and "POSTGRES_PASSWORD" not in files["mao.env"]
    )


def test_bad_answers_are_all_reported_and_nothing_is_written(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps(
            {
                "join": True,
                "directory": str(tmp_path / "x"),
                "name": "../x",
                "ip": "127.0.0.1",
                "git_email": "nope",
                "postgres_port": 0,
            }
        )
    )
    result = install("--answers", str(answers))
    assert result.exit_code == 2
    for text in (
        "name: invalid instance name",
        "ip: 127.0.0.1 is only reachable from this machine",
        "git_email:",
        "postgres_port:",
        "join_bundle: joining needs",
    ):
        assert text in result.stderr, text
    assert not (tmp_path / "x").exists()

    bundle, _ = write_bundle(
        tmp_path, "gamma", "10.0.0.4", "alpha=https://10.0.0.1:2380,gamma=https://10.0.0.4:2380"
    )
    answers.write_text(
        json.dumps(
            {
                "join": True,
                "directory": str(tmp_path / "x"),
                "name": "gamma",
                "ip": "10.0.0.3",
                "join_bundle": str(bundle),
            }
        )
    )
    result = install("--answers", str(answers))
    assert result.exit_code == 2 and "made for gamma at https://10.0.0.4:2380" in result.stderr
    assert "this instance's peer URL is https://10.0.0.3:2380" in result.stderr
    bundle.write_text('{"format": "something else"}')
    result = install("--answers", str(answers))
    assert result.exit_code == 2 and "is not a join bundle" in result.stderr
    assert not (tmp_path / "x").exists()


def test_answers_of_the_wrong_type(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps({"directory": str(tmp_path / "x"), "ip": 10, "join": "yes", "labels": ["a"]})
    )
    result = install("--answers", str(answers))
    assert (
        result.exit_code == 2
        and "ip: must be a string" in result.stderr
        and "join: must be true or false" in result.stderr
    )
    assert not (tmp_path / "x").exists()


def test_malformed_answers_files(tmp_path: Path) -> None:
    broken = tmp_path / "answers.yaml"
    broken.write_text("name: [unclosed\n")
    result = install("--answers", str(broken))
    assert result.exit_code == 2 and "is not valid YAML" in result.stderr
    unknown = tmp_path / "answers.json"
    unknown.write_text('{"nmae": "typo"}')
    result = install("--answers", str(unknown))
    assert result.exit_code == 2 and "unknown answer(s) nmae" in result.stderr


def test_the_wizard_needs_a_terminal(tmp_path: Path) -> None:
    result = install("--dir", str(tmp_path))
    assert result.exit_code == 2 and "--answers FILE" in result.stderr


def test_every_port_and_image_is_an_answer(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    ports = {
        "api_port": 18080,
        "postgres_port": 15433,
        "executor_port": 18081,
        "etcd_client_port": 12379,
        "etcd_peer_port": 12380,
    }
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps(
            {
                "directory": str(directory),
                "name": "alpha",
                "ip": "10.0.0.1",
                "images": {"etcd": "quay.io/coreos/etcd:v3.5.17"},
                **ports,
            }
        )
    )
    result = install("--answers", str(answers))
    assert result.exit_code == 0, result.output
    compose, env = read_install(directory)
    text = (directory / "docker-compose.yaml").read_text()
    for key, port in ports.items():
        # The executor listens on its socket in the data folder: its port is accepted, and unused.
        assert (str(port) in text) is (key != "executor_port")
    for default in (2379, 2380, 5433, 8080, 8081):
        assert f":{default}" not in text and f"={default}" not in text
    assert "127.0.0.1:15433/mao" in env["MAO_DATABASE_URL"]
    dotenv = parse_env((directory / ".env").read_text())
    assert dotenv["COMPOSE_PROJECT_NAME"] == "mao-alpha"
    assert dotenv["MAO_ETCD_IMAGE"] == "quay.io/coreos/etcd:v3.5.17"
    assert dotenv["MAO_POSTGRES_IMAGE"] == "mao-postgres:bookworm"
    assert compose["services"]["etcd"]["image"] == "${MAO_ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.17}"

    answers.write_text(
        json.dumps(
            {
                "directory": str(tmp_path / "x"),
                "api_port": 2380,
                "images": {"etcd": "bad image\nX=1", "redis": "redis"},
            }
        )
    )
    result = install("--answers", str(answers))
    assert result.exit_code == 2
    for text in ("ports: ", "must all differ", "'redis' is not a service", "is not an image name"):
        assert text in result.stderr, text
    assert not (tmp_path / "x").exists()


def test_an_initial_cluster_given_with_the_bundle_must_agree_with_it(tmp_path: Path) -> None:
    cluster = "alpha=https://10.0.0.1:2380,beta=https://10.0.0.2:2380"
    bundle, _ = write_bundle(tmp_path, "beta", "10.0.0.2", cluster)
    base = ("--non-interactive", "--join", "--join-bundle", str(bundle), "--dir")
    same = install(*base, str(tmp_path / "a"), "--initial-cluster", f"ETCD_INITIAL_CLUSTER={cluster}")
    assert same.exit_code == 0, same.output
    other = install(
        *base,
        str(tmp_path / "b"),
        "--initial-cluster",
        "alpha=https://10.0.0.1:2380,beta=https://10.0.0.3:2380",
    )
    assert other.exit_code == 2 and "differs from the join bundle's" in other.stderr
    assert not (tmp_path / "b").exists()


def test_tls_stack_mounts_certificates_where_they_are_read_and_hands_them_over(tmp_path: Path) -> None:
    from ctl.compose import compose_document
    from ctl.instance_config import PKI_MOUNT, InstanceConfig

    directory = tmp_path / "node"
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps(
            {"directory": str(directory), "name": "alpha", "ip": "10.0.0.1", "etcd_client_port": 12379}
        )
    )
    result = install("--answers", str(answers))
    assert result.exit_code == 0, result.output
    compose, _ = read_install(directory)
    services = compose["services"]
    mount = f"{directory / 'pki'}:{PKI_MOUNT}:ro"
    assert [name for name, service in services.items() if mount in service.get("volumes", [])] == [
        "etcd",
        "orchestrator",
    ]
    test = services["etcd"]["healthcheck"]["test"]
    assert "--endpoints=https://127.0.0.1:12379" in test
    assert {
        f"--cacert={PKI_MOUNT}/ca.crt",
        f"--cert={PKI_MOUNT}/etcd.crt",
        f"--key={PKI_MOUNT}/etcd.key",
    } <= set(test)
    assert services["etcd"]["environment"]["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.0.0.1:12379"
    assert services["orchestrator"]["environment"]["MAO_ETCD_KEY"] == f"{PKI_MOUNT}/client.key"
    pki_dir = directory / "pki"
    for name in ("client.key", "etcd.key"):
        assert stat.S_IMODE((pki_dir / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(pki_dir.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        # The orchestrator's uid owns what it reads, as it owns the data folder; etcd.key stays root's.
        run_as = tuple(int(part) for part in services["orchestrator"]["user"].split(":"))
        for path in (pki_dir, pki_dir / "ca.crt", pki_dir / "client.crt", pki_dir / "client.key"):
            assert (path.stat().st_uid, path.stat().st_gid) == run_as, path
        assert (pki_dir / "etcd.key").stat().st_uid == 0

    plain = compose_document(
        InstanceConfig(name="p", ip="127.0.0.1", directory=tmp_path / "p", git_email="a@b.c", tls=False)
    )["services"]
    assert all(PKI_MOUNT not in " ".join(s.get("volumes", [])) for s in plain.values())
    assert "--endpoints=http://127.0.0.1:2379" in plain["etcd"]["healthcheck"]["test"]
    assert not any(arg.startswith("--cacert") for arg in plain["etcd"]["healthcheck"]["test"])
    assert plain["orchestrator"]["environment"]["MAO_ETCD_INSECURE"] == "1"


def test_a_single_host_federation_takes_loopback_addresses_joining_included(tmp_path: Path) -> None:
    """Two instances on one machine: A founds at 127.0.0.2, B joins at 127.0.0.3 (loopback, which a
    real joining install refuses); each API listens on its own loopback address only."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    founded = install(
        "--non-interactive", "--single-host", "--dir", str(a_dir), "--name", "a", "--ip", "127.0.0.2",
        "--api-port", "18080", "--json",
    )  # fmt: skip
    assert founded.exit_code == 0, founded.output
    assert json.loads(founded.stdout)["api_url"] == "http://127.0.0.2:18080"
    cluster = "a=https://127.0.0.2:2380,b=https://127.0.0.3:2380"
    bundle, _ = write_bundle(tmp_path, "b", "127.0.0.3", cluster)
    answers = tmp_path / "b.yaml"
    answers.write_text(
        yaml.safe_dump(
            {
                "join": True,
                "join_bundle": str(bundle),
                "directory": str(b_dir),
                "ip": "127.0.0.3",
                "single_host": True,
            }
        )
    )
    joined = install("--answers", str(answers))
    assert joined.exit_code == 0, joined.output
    for directory, ip, port in ((a_dir, "127.0.0.2", 18080), (b_dir, "127.0.0.3", 8080)):
        compose, _ = read_install(directory)
        orchestrator = compose["services"]["orchestrator"]
        assert orchestrator["environment"]["MAO_API_HOST"] == ip
        assert orchestrator["environment"]["MAO_ADVERTISE_URL"] == f"http://{ip}:{port}"
        # The healthcheck sends the token through the API's socket, never to a TCP port.
        assert f"unix://{directory}/data/api.sock" in orchestrator["healthcheck"]["test"]
        etcd = compose["services"]["etcd"]["environment"]
        assert ip in etcd["ETCD_LISTEN_CLIENT_URLS"] and "0.0.0.0" not in str(compose)
    # Without single_host, joining still refuses loopback; with it, an address beyond loopback is refused.
    answers.write_text(answers.read_text().replace("single_host: true", "single_host: false"))
    refused = install("--answers", str(answers))
    assert refused.exit_code == 2 and "ip: 127.0.0.3 is only reachable from this machine" in refused.stderr
    wide = install("--non-interactive", "--single-host", "--dir", str(tmp_path / "c"), "--ip", "10.0.0.1")
    assert wide.exit_code == 2 and "not a loopback address" in wide.stderr
    # The default stays: every address, for instances on several machines.
    plain = install("--non-interactive", "--dir", str(tmp_path / "d"), "--name", "d", "--ip", "10.0.0.4")
    assert plain.exit_code == 0
    assert (
        read_install(tmp_path / "d")[0]["services"]["orchestrator"]["environment"]["MAO_API_HOST"]
        == "0.0.0.0"
    )
