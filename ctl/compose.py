"""An instance's deployment: ``docker-compose.yaml``, ``mao.env`` and the data folders.

One function builds the compose document for ``maoctl instance install`` and for the repository's
``docker-compose.yml`` (``python -m ctl.compose > docker-compose.yml``), so the two cannot drift.

The split between the two files:
- the compose file holds the *wiring*: values that must agree with the rest of the same file (mount
  paths, ports, service addresses) and etcd's ``ETCD_*`` settings;
- ``mao.env`` (mode 0600) holds the operator's choices and the generated secrets: instance name,
  git e-mail, labels, database URL and password, API and executor tokens. It is also a valid
  ``MAO_CONFIG_FILE`` for the orchestrator.

Every service uses host networking: the executor keeps listening on 127.0.0.1 (its safe default) and
the tools it starts get host networking too. The data folder is mounted at the same absolute path in
the orchestrator and the executor, so the paths the orchestrator hands the executor for bind mounts are
the host's paths (``MAO_HOST_DATA_DIR`` = ``MAO_DATA_DIR``).
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator import __version__

from .cluster import CLIENT_PORT, format_initial_cluster, parse_initial_cluster, peer_url, url_host

COMPOSE_FILE = "docker-compose.yaml"
ENV_FILE = "mao.env"
ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
POSTGRES_IMAGE = "postgres:15"
DB_USER = DB_NAME = "mao"
REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_KEYS = ("POSTGRES_PASSWORD", "MAO_API_TOKEN", "MAO_EXECUTOR_TOKEN")
PKI_MOUNT = "/etc/mao/pki"


@dataclass(frozen=True)
class InstanceConfig:
    """Everything the installer asks, with the defaults it offers."""

    name: str
    ip: str
    directory: Path
    git_email: str
    ssh_dir: Path | None = None
    initial_cluster: str | None = None  # None: this instance starts a new etcd cluster
    federation: str | None = None
    api_port: int = 8080
    executor_port: int = 8081
    postgres_port: int = 5433
    labels: dict[str, str] = field(default_factory=dict)
    # etcd's clients and peers over TLS with client certificates (<directory>/pki); False only for a
    # plain-HTTP etcd chosen explicitly.
    tls: bool = True

    @property
    def joining(self) -> bool:
        return self.initial_cluster is not None

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def peer_url(self) -> str:
        return peer_url(self.ip, tls=self.tls)

    @property
    def pki_dir(self) -> Path:
        """This instance's certificates (ctl.pki); mounted read-only at PKI_MOUNT."""
        return self.directory / "pki"

    @property
    def ca_dir(self) -> Path:
        """The federation CA, only in the founding instance's directory; never mounted anywhere."""
        return self.directory / "ca"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass(frozen=True)
class Secrets:
    postgres_password: str
    api_token: str
    executor_token: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(32), secrets.token_urlsafe(32))

    @classmethod
    def reuse_or_generate(cls, env_file: Path) -> Secrets:
        """The secrets of an earlier install in the same folder, so its database stays readable."""
        fresh = cls.generate()
        try:
            old = parse_env(env_file.read_text())
        except OSError:
            return fresh
        return cls(
            old.get("POSTGRES_PASSWORD") or fresh.postgres_password,
            old.get("MAO_API_TOKEN") or fresh.api_token,
            old.get("MAO_EXECUTOR_TOKEN") or fresh.executor_token,
        )


def parse_env(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as written by :func:`env_text` (the orchestrator reads them the same way)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def database_url(config: InstanceConfig, password: str) -> str:
    return f"postgresql+asyncpg://{DB_USER}:{password}@127.0.0.1:{config.postgres_port}/{DB_NAME}"


def env_values(config: InstanceConfig, keys: Secrets) -> dict[str, str]:
    values = {
        "MAO_INSTANCE_NAME": config.name,
        "MAO_GIT_EMAIL": config.git_email,
        "MAO_API_TOKEN": keys.api_token,
        "MAO_EXECUTOR_TOKEN": keys.executor_token,
        "POSTGRES_PASSWORD": keys.postgres_password,
        "MAO_DATABASE_URL": database_url(config, keys.postgres_password) if keys.postgres_password else "",
    }
    if config.labels:
        values["MAO_LABELS"] = ",".join(f"{k}={v}" for k, v in config.labels.items())
    return values


def env_text(config: InstanceConfig, keys: Secrets) -> str:
    lines = [
        f"# MAO instance {config.name}: its identity and secrets. Keep this file private (mode 0600).",
        "# Read by the orchestrator, the executor and PostgreSQL through the compose file's env_file.",
        "# Changing POSTGRES_PASSWORD after the first start does not change the database's password.",
    ]
    lines += [f"{key}={value}" for key, value in env_values(config, keys).items()]
    return "\n".join(lines) + "\n"


def etcd_environment(config: InstanceConfig) -> dict[str, str]:
    own = config.peer_url
    scheme = "https" if config.tls else "http"
    client_ips = ["127.0.0.1"] + ([config.ip] if config.ip != "127.0.0.1" else [])
    environment = {
        "ETCD_NAME": config.name,
        "ETCD_DATA_DIR": "/etcd-data",
        "ETCD_LISTEN_PEER_URLS": own,
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": own,
        "ETCD_LISTEN_CLIENT_URLS": ",".join(f"{scheme}://{url_host(ip)}:{CLIENT_PORT}" for ip in client_ips),
        "ETCD_ADVERTISE_CLIENT_URLS": f"{scheme}://{url_host(config.ip)}:{CLIENT_PORT}",
        "ETCD_INITIAL_CLUSTER": config.initial_cluster or format_initial_cluster([(config.name, own)]),
        "ETCD_INITIAL_CLUSTER_STATE": "existing" if config.joining else "new",
    }
    if config.tls:
        # Clients and peers must show a certificate the federation CA signed (--client-cert-auth and
        # --peer-client-cert-auth): a tool on this host's network, or anyone reaching port 2379 or
        # 2380, gets nothing without one.
        cert, key, ca = (f"{PKI_MOUNT}/{n}" for n in ("etcd.crt", "etcd.key", "ca.crt"))
        environment.update(
            {
                "ETCD_CLIENT_CERT_AUTH": "true",
                "ETCD_TRUSTED_CA_FILE": ca,
                "ETCD_CERT_FILE": cert,
                "ETCD_KEY_FILE": key,
                "ETCD_PEER_CLIENT_CERT_AUTH": "true",
                "ETCD_PEER_TRUSTED_CA_FILE": ca,
                "ETCD_PEER_CERT_FILE": cert,
                "ETCD_PEER_KEY_FILE": key,
            }
        )
    return environment


def orchestrator_etcd_environment(config: InstanceConfig) -> dict[str, str]:
    """How the orchestrator reaches etcd: its client certificate, or plain HTTP said explicitly."""
    if not config.tls:
        return {"MAO_ETCD_INSECURE": "1"}
    return {
        "MAO_ETCD_CA": f"{PKI_MOUNT}/ca.crt",
        "MAO_ETCD_CERT": f"{PKI_MOUNT}/client.crt",
        "MAO_ETCD_KEY": f"{PKI_MOUNT}/client.key",
    }


def etcd_endpoints(config: InstanceConfig) -> str:
    """This instance's own etcd member first, then the other members' client ports (same hosts as
    their peer URLs), so the orchestrator fails over when its own member is down."""
    endpoints = [f"127.0.0.1:{CLIENT_PORT}"]
    for name, url in parse_initial_cluster(config.initial_cluster) if config.initial_cluster else []:
        host = urlsplit(url).hostname
        if name != config.name and host:
            endpoints.append(f"{url_host(host)}:{CLIENT_PORT}")
    return ",".join(endpoints)


def _mao_image(dockerfile: str, tag: str, build_context: str | None) -> dict[str, Any]:
    service: dict[str, Any] = {"image": f"{tag}:{__version__}"}
    if build_context is not None:
        service["build"] = {"context": build_context, "dockerfile": dockerfile}
    return service


def compose_document(config: InstanceConfig, build_context: str | None) -> dict[str, Any]:
    """The compose file as a dict. ``build_context`` is where Dockerfile lives (None: prebuilt images)."""
    data = str(config.data_dir)
    orchestrator_volumes = [f"{data}:{data}"]
    if config.ssh_dir is not None:
        # Read-only: git over SSH needs the keys, nothing may change them.
        orchestrator_volumes.append(f"{config.ssh_dir}:/root/.ssh:ro")
    pki_volume = [f"{config.pki_dir}:{PKI_MOUNT}:ro"] if config.tls else []
    services: dict[str, Any] = {
        "etcd": {
            "image": ETCD_IMAGE,
            "network_mode": "host",
            "restart": "unless-stopped",
            "environment": etcd_environment(config),
            "volumes": [f"{config.directory / 'etcd'}:/etcd-data", *pki_volume],
        },
        "postgres": {
            "image": POSTGRES_IMAGE,
            "network_mode": "host",
            "restart": "unless-stopped",
            # Loopback only, on its own port so it never meets a PostgreSQL the host already runs.
            "command": ["postgres", "-c", "listen_addresses=127.0.0.1", "-c", f"port={config.postgres_port}"],
            "env_file": [ENV_FILE],
            "environment": {
                "POSTGRES_USER": DB_USER,
                "POSTGRES_DB": DB_NAME,
                "PGPORT": str(config.postgres_port),
            },
            "volumes": [f"{config.directory / 'postgres'}:/var/lib/postgresql/data"],
            "healthcheck": {
                "test": [
                    "CMD",
                    "pg_isready",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(config.postgres_port),
                    "-U",
                    DB_USER,
                ],
                "interval": "5s",
                "timeout": "5s",
                "retries": 20,
            },
        },
        "executor": {
            **_mao_image("Dockerfile_executor", "mao-executor", build_context),
            "network_mode": "host",
            "restart": "unless-stopped",
            "env_file": [ENV_FILE],
            "environment": {"MAO_EXECUTOR_HOST": "127.0.0.1", "MAO_EXECUTOR_PORT": str(config.executor_port)},
            "volumes": ["/var/run/docker.sock:/var/run/docker.sock", f"{data}:{data}"],
        },
        "orchestrator": {
            **_mao_image("Dockerfile", "mao-orchestrator", build_context),
            "network_mode": "host",
            "restart": "unless-stopped",
            "env_file": [ENV_FILE],
            "environment": {
                "MAO_DATA_DIR": data,
                "MAO_HOST_DATA_DIR": data,
                "MAO_ETCD_ENDPOINTS": etcd_endpoints(config),
                "MAO_EXECUTOR_URL": f"http://127.0.0.1:{config.executor_port}",
                # Other instances call this API, so it listens beyond loopback (MAO_API_TOKEN guards it)
                # and publishes the address they reach it on in the federation's member list.
                "MAO_API_HOST": "0.0.0.0",
                "MAO_API_PORT": str(config.api_port),
                "MAO_ADVERTISE_URL": f"http://{url_host(config.ip)}:{config.api_port}",
                **orchestrator_etcd_environment(config),
            },
            "volumes": [*orchestrator_volumes, *pki_volume],
            "depends_on": {
                "postgres": {"condition": "service_healthy"},
                "etcd": {"condition": "service_started"},
                "executor": {"condition": "service_started"},
            },
        },
    }
    return {"name": project_name(config.name), "services": services}


def project_name(instance: str) -> str:
    """A compose project name (lowercase letters, digits, '-', '_') for the instance."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in instance.lower())
    return name if name.startswith("mao") else f"mao-{name}"


def compose_text(config: InstanceConfig, build_context: str | None, header: str = "") -> str:
    import yaml

    body = yaml.safe_dump(compose_document(config, build_context), sort_keys=False, default_flow_style=False)
    return header + body


def local_build_context() -> str | None:
    """This checkout, when maoctl runs from one (the images are built from it); else None."""
    return str(REPO_ROOT) if (REPO_ROOT / "Dockerfile").is_file() else None


def existing_files(directory: Path) -> list[Path]:
    return [p for p in (directory / COMPOSE_FILE, directory / ENV_FILE) if p.exists()]


def write_install(config: InstanceConfig, keys: Secrets, build_context: str | None) -> list[Path]:
    """Write the install directory; returns the files and folders written."""
    config.directory.mkdir(parents=True, exist_ok=True)
    folders = [config.data_dir, config.directory / "etcd", config.directory / "postgres"]
    for folder in folders:
        # etcd refuses a data dir others can read; the rest holds private data too.
        folder.mkdir(mode=0o700, exist_ok=True)
    compose = config.directory / COMPOSE_FILE
    compose.write_text(
        compose_text(
            config,
            build_context,
            header=f"# MAO instance {config.name}, written by maoctl instance install.\n",
        )
    )
    env_file = config.directory / ENV_FILE
    write_private(env_file, env_text(config, keys))
    return [compose, env_file, *folders]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only, never briefly readable by others."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing temp file keeps its mode otherwise
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


# -- the repository's docker-compose.yml: one standalone instance ------------------------------------
EXAMPLE = InstanceConfig(
    name="mao-node", ip="127.0.0.1", directory=Path("/var/lib/mao"), git_email="mao@mao-node"
)
EXAMPLE_HEADER = """\
# One standalone MAO instance (orchestrator, executor, PostgreSQL, etcd) with its data under /var/lib/mao.
# Generated by `python -m ctl.compose > docker-compose.yml`, the code `maoctl instance install` uses
# (prefer the installer: it asks for the instance name and IP, and generates the secrets).
# Before `docker compose up -d`: cp mao.env.example mao.env, then fill in the three secrets
# (python3 -c 'import secrets; print(secrets.token_urlsafe(32))') and the password in MAO_DATABASE_URL,
# and make etcd's certificates (its clients and peers use TLS): python -m ctl.pki /var/lib/mao mao-node 127.0.0.1
"""


def example_env_text() -> str:
    return env_text(EXAMPLE, Secrets("", "", "")).replace(
        "MAO_DATABASE_URL=\n", f"MAO_DATABASE_URL={database_url(EXAMPLE, 'POSTGRES_PASSWORD_HERE')}\n"
    )


def main(argv: list[str]) -> int:
    if argv[1:] == ["--env"]:
        sys.stdout.write(example_env_text())
    elif not argv[1:]:
        sys.stdout.write(compose_text(EXAMPLE, ".", header=EXAMPLE_HEADER))
    else:
        sys.stderr.write(
            "usage: python -m ctl.compose [--env]  (prints docker-compose.yml or mao.env.example)\n"
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
