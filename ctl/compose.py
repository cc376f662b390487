"""An instance's deployment: ``docker-compose.yaml``, ``.env``, ``mao.env`` and the data folders.

One function builds the compose document for ``maoctl instance install`` and for the repository's
``docker-compose.yml`` (``python -m ctl.compose > docker-compose.yml``), so the two cannot drift.

The split between the files:
- the compose file holds the *wiring*: values that must agree with the rest of the same file (mount
  paths, ports, service addresses) and etcd's ``ETCD_*`` settings;
- ``.env`` (compose's own: the project and its images) and one private env file per service that
  needs a secret (``mao.env``, ``executor.env``, ``postgres.env``): ``env_files``;
- what the installer asks (names, addresses, ports, images, folders): ``instance_config``.

The file has no ``version`` key (the Compose Specification), which both docker-compose 1.29 (v1) and
``docker compose`` (v2) read, ``depends_on`` conditions included.

Every service uses host networking, on ports the installer asks for (so two instances, or a demo node,
share a host): the engine may run without a bridge network (``dockerd --bridge=none``, as on our CI),
where published ports and compose's own networks cannot work, and the tools the executor starts are
on host networking too. The data folder is mounted at the same absolute path in the orchestrator and
the executor, so the paths the orchestrator hands the executor for bind mounts are the host's paths
(``MAO_HOST_DATA_DIR`` = ``MAO_DATA_DIR``), and it is the executor's data root: nothing outside it is
ever mounted into a tool.

No token crosses a TCP port on this host (docs/security.md#transports): the executor listens on a
Unix socket in the data folder (``<data>/executor/executor.sock``, handed to the orchestrator's uid,
0600 in a 0700 folder), and the orchestrator's API also listens on ``<data>/api.sock``, which maoctl on
the host and the orchestrator's healthcheck use. A process that takes a port while a service restarts
receives nothing. (``executor_port`` is no longer used; it is accepted so earlier answers files load.)

etcd: a member's client port is its peer port minus one (2379/2380 by default): the orchestrator's
fail-over endpoints for the other members are derived from their peer URLs that way. Its clients and
peers use TLS with client certificates (``<dir>/pki``, mounted read-only into etcd and the orchestrator
only, at ``PKI_MOUNT``) unless ``tls`` is False (then the orchestrator gets ``MAO_ETCD_INSECURE=1``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .cluster import format_initial_cluster, parse_initial_cluster, url_host
from .env_files import (
    DB_NAME,
    DB_USER,
    ENV_FILE,
    EXECUTOR_ENV_FILE,
    POSTGRES_ENV_FILE,
    Secrets,
    database_url,
    env_text,
    executor_env_text,
    postgres_env_text,
)
from .instance_config import IMAGE_VARIABLES, PKI_MOUNT, InstanceConfig

COMPOSE_FILE = "docker-compose.yaml"


def _image(config: InstanceConfig, service: str) -> str:
    # .env (or the shell) may name another image, e.g. the official quay.io/coreos/etcd or postgres.
    return f"${{{IMAGE_VARIABLES[service]}:-{config.images[service]}}}"


def _healthcheck(test: list[str], retries: int = 30) -> dict[str, Any]:
    return {"test": ["CMD", *test], "interval": "5s", "timeout": "10s", "retries": retries}


def _client_url(ip: str, port: int, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{url_host(ip)}:{port}"


# -- etcd -------------------------------------------------------------------------------------------
def etcd_environment(config: InstanceConfig) -> dict[str, str]:
    own = config.peer_url
    client_ips = ["127.0.0.1"] + ([config.ip] if config.ip != "127.0.0.1" else [])
    environment = {
        "ETCD_NAME": config.name,
        "ETCD_DATA_DIR": "/etcd-data",
        "ETCD_LISTEN_PEER_URLS": own,
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": own,
        "ETCD_LISTEN_CLIENT_URLS": ",".join(
            _client_url(ip, config.etcd_client_port, config.tls) for ip in client_ips
        ),
        "ETCD_ADVERTISE_CLIENT_URLS": _client_url(config.ip, config.etcd_client_port, config.tls),
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


def etcd_healthcheck(config: InstanceConfig) -> dict[str, Any]:
    # `endpoint health` reads a key: healthy means this member is up AND the cluster has quorum.
    # With TLS, etcdctl shows the member's own certificate (valid as a client too): the healthcheck
    # runs as the container's root, which reads the read-only mount the etcd user reads a copy of.
    endpoint = _client_url("127.0.0.1", config.etcd_client_port, config.tls)
    tls_flags = (
        [f"--cacert={PKI_MOUNT}/ca.crt", f"--cert={PKI_MOUNT}/etcd.crt", f"--key={PKI_MOUNT}/etcd.key"]
        if config.tls
        else []
    )
    return _healthcheck(["etcdctl", f"--endpoints={endpoint}", *tls_flags, "endpoint", "health"], retries=60)


def pki_volumes(config: InstanceConfig) -> list[str]:
    """The certificates, read-only, for etcd and the orchestrator only (never the executor or tools)."""
    return [f"{config.pki_dir}:{PKI_MOUNT}:ro"] if config.tls else []


def etcd_volumes(config: InstanceConfig) -> list[str]:
    return [f"{config.directory / 'etcd'}:/etcd-data", *pki_volumes(config)]


def etcd_service(config: InstanceConfig) -> dict[str, Any]:
    return {
        "image": _image(config, "etcd"),
        "network_mode": "host",
        "restart": "unless-stopped",
        "environment": etcd_environment(config),
        "volumes": etcd_volumes(config),
        "healthcheck": etcd_healthcheck(config),
    }


def etcd_endpoints(config: InstanceConfig) -> str:
    """This instance's own etcd member first, then the other members' client ports (same hosts as
    their peer URLs, port one below), so the orchestrator fails over when its own member is down."""
    endpoints = [f"127.0.0.1:{config.etcd_client_port}"]
    for name, url in parse_initial_cluster(config.initial_cluster) if config.initial_cluster else []:
        parts = urlsplit(url)
        if name != config.name and parts.hostname and parts.port:
            endpoints.append(f"{url_host(parts.hostname)}:{parts.port - 1}")
    return ",".join(endpoints)


# -- PostgreSQL -------------------------------------------------------------------------------------
def postgres_service(config: InstanceConfig) -> dict[str, Any]:
    port = str(config.postgres_port)
    return {
        "image": _image(config, "postgres"),
        "network_mode": "host",
        "restart": "unless-stopped",
        # Loopback only, on its own port so it never meets a PostgreSQL the host already runs.
        "command": ["postgres", "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}"],
        "env_file": [POSTGRES_ENV_FILE],
        "environment": {"POSTGRES_USER": DB_USER, "POSTGRES_DB": DB_NAME, "PGPORT": port},
        "volumes": [f"{config.directory / 'postgres'}:/var/lib/postgresql/data"],
        "healthcheck": _healthcheck(
            ["pg_isready", "-h", "127.0.0.1", "-p", port, "-U", DB_USER, "-d", DB_NAME]
        ),
    }


# -- executor and orchestrator ----------------------------------------------------------------------
def executor_socket(config: InstanceConfig) -> str:
    """The executor's socket in the shared data folder (the executor's default for its data root)."""
    return f"{config.data_dir}/executor/executor.sock"


def api_socket(config: InstanceConfig) -> str:
    """The orchestrator's own socket (its default, ``$MAO_DATA_DIR/api.sock``): maoctl's way in."""
    return f"{config.data_dir}/api.sock"


def executor_service(config: InstanceConfig) -> dict[str, Any]:
    data = str(config.data_dir)
    uid, _, gid = config.run_as.partition(":")
    return {
        "image": _image(config, "executor"),
        "network_mode": "host",
        "restart": "unless-stopped",
        "env_file": [EXECUTOR_ENV_FILE],
        "environment": {
            "MAO_INSTANCE_NAME": config.name,
            # Tools get folders of the data folder only; its socket (there) goes to the data's owner.
            "MAO_EXECUTOR_DATA_ROOT": data,
            "MAO_EXECUTOR_SOCKET": executor_socket(config),
            # The one user tools run as: the orchestrator's, which owns the work folders.
            "MAO_TOOL_UID": uid,
            "MAO_TOOL_GID": gid or uid,
        },
        # Root with the host's Docker socket: the one container that is not unprivileged.
        "volumes": ["/var/run/docker.sock:/var/run/docker.sock", f"{data}:{data}"],
        "healthcheck": _healthcheck(
            ["python", "-m", "ctl.healthcheck", f"unix://{executor_socket(config)}", "MAO_EXECUTOR_TOKEN"]
        ),
    }


def orchestrator_environment(config: InstanceConfig) -> dict[str, str]:
    data = str(config.data_dir)
    return {
        "MAO_DATA_DIR": data,
        "MAO_HOST_DATA_DIR": data,
        "MAO_ETCD_ENDPOINTS": etcd_endpoints(config),
        "MAO_EXECUTOR_URL": f"unix://{executor_socket(config)}",
        # Other instances call this API, so it listens beyond loopback (MAO_API_TOKEN guards it)
        # and publishes the address they reach it on in the federation's member list; a
        # single-host federation's instance listens on its own loopback address only.
        "MAO_API_HOST": config.api_host,
        "MAO_API_PORT": str(config.api_port),
        "MAO_ADVERTISE_URL": f"http://{url_host(config.ip)}:{config.api_port}",
        **orchestrator_etcd_environment(config),
    }


def orchestrator_volumes(config: InstanceConfig) -> list[str]:
    data = str(config.data_dir)
    volumes = [f"{data}:{data}"]
    if config.ssh_dir is not None:
        # Read-only: git over SSH needs the keys, nothing may change them.
        volumes.append(f"{config.ssh_dir}:/home/mao/.ssh:ro")
    return [*volumes, *pki_volumes(config)]


def orchestrator_service(config: InstanceConfig) -> dict[str, Any]:
    return {
        "image": _image(config, "orchestrator"),
        "network_mode": "host",
        "restart": "unless-stopped",
        # Unprivileged; the tools it runs get the same uid (the data folder's owner).
        "user": config.run_as,
        "env_file": [ENV_FILE],
        "environment": orchestrator_environment(config),
        "volumes": orchestrator_volumes(config),
        "healthcheck": _healthcheck(
            ["python", "-m", "ctl.healthcheck", f"unix://{api_socket(config)}", "MAO_API_TOKEN"], retries=60
        ),
        # It migrates PostgreSQL and registers in etcd as it starts: both must answer first.
        "depends_on": {
            "postgres": {"condition": "service_healthy"},
            "etcd": {"condition": "service_healthy"},
            "executor": {"condition": "service_healthy"},
        },
    }


def compose_document(config: InstanceConfig) -> dict[str, Any]:
    """The compose file as a dict (images are built by scripts/images.sh, never by compose)."""
    return {
        "services": {
            "etcd": etcd_service(config),
            "postgres": postgres_service(config),
            "executor": executor_service(config),
            "orchestrator": orchestrator_service(config),
        }
    }


def compose_text(config: InstanceConfig, header: str = "") -> str:
    import yaml

    body = yaml.safe_dump(compose_document(config), sort_keys=False, default_flow_style=False)
    return header + body


# -- the repository's docker-compose.yml: one standalone instance ------------------------------------
EXAMPLE = InstanceConfig(
    name="mao-node", ip="127.0.0.1", directory=Path("/var/lib/mao"), git_email="mao@mao-node"
)
EXAMPLE_HEADER = """\
# One standalone MAO instance (orchestrator, executor, PostgreSQL, etcd) with its data under /var/lib/mao.
# Generated by `python -m ctl.compose > docker-compose.yml`, the code `maoctl instance install` uses
# (prefer the installer: it asks for the instance name, IP and ports, and generates the secrets and
# etcd's certificates). Before starting it: scripts/images.sh (builds the images, no registry needed);
# cp mao.env.example mao.env, executor.env.example executor.env, postgres.env.example postgres.env
# (chmod 600 all three), then fill in the secrets (python3 -c 'import secrets; print(secrets.token_urlsafe(32))'):
# the executor token in mao.env and executor.env, the password in postgres.env and in MAO_DATABASE_URL;
# make etcd's certificates (its clients and peers use TLS): python -m ctl.pki /var/lib/mao mao-node 127.0.0.1;
# mkdir -p /var/lib/mao/data && chown 10001:10001 /var/lib/mao/data /var/lib/mao/pki
# /var/lib/mao/pki/ca.crt /var/lib/mao/pki/client.crt /var/lib/mao/pki/client.key
# Then: docker-compose up -d  (v1)  or  docker compose up -d  (v2).
"""


def example_env_text(service: str = "orchestrator") -> str:
    """The repository's ``mao.env.example`` (or ``executor.env.example``, ``postgres.env.example``)."""
    blank = Secrets("", "", "")
    if service == "executor":
        return executor_env_text(EXAMPLE, blank)
    if service == "postgres":
        return postgres_env_text(EXAMPLE, blank)
    return env_text(EXAMPLE, blank).replace(
        "MAO_DATABASE_URL=\n", f"MAO_DATABASE_URL={database_url(EXAMPLE, 'POSTGRES_PASSWORD_HERE')}\n"
    )


EXAMPLE_ENV_FILES = {
    "orchestrator": "mao.env.example",
    "executor": "executor.env.example",
    "postgres": "postgres.env.example",
}
USAGE = (
    "usage: python -m ctl.compose [--env [orchestrator|executor|postgres] | --dockerfile orchestrator|executor]\n"
    "  (prints docker-compose.yml, mao.env.example (executor.env.example, postgres.env.example),\n"
    "  Dockerfile or Dockerfile_executor)\n"
)


def main(argv: list[str]) -> int:
    from .dockerfiles import SPECS, dockerfile_text

    args = argv[1:]
    if args == ["--env"]:
        sys.stdout.write(example_env_text())
    elif len(args) == 2 and args[0] == "--env" and args[1] in EXAMPLE_ENV_FILES:
        sys.stdout.write(example_env_text(args[1]))
    elif not args:
        sys.stdout.write(compose_text(EXAMPLE, header=EXAMPLE_HEADER))
    elif len(args) == 2 and args[0] == "--dockerfile" and args[1] in SPECS:
        sys.stdout.write(dockerfile_text(args[1]))
    else:
        sys.stderr.write(USAGE)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
