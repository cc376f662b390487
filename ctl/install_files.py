"""Writing an instance's install folder: the compose file, ``.env``, the private env files (``mao.env``,
``executor.env``, ``postgres.env``: each service's own secrets, mode 0600) and the data folders.

The data folder belongs to the user the orchestrator runs as (its image's unprivileged ``mao``, uid
10001, when the installer runs as root; the installing user otherwise), so the orchestrator and the
tools it starts (same uid) can write there without running as root. The same user gets the part of
``<dir>/pki`` the orchestrator reads (its client certificate and key, the CA certificate).
"""

from __future__ import annotations

import os
from pathlib import Path

from .compose import COMPOSE_FILE, compose_text
from .dockerfiles import MAO_UID
from .env_files import DOTENV, PRIVATE_FILES, Secrets, dotenv_text, private_texts
from .instance_config import InstanceConfig
from .pki import CA_CERT, CLIENT_CERT, CLIENT_KEY

# What the orchestrator (uid run_as) reads of <dir>/pki: etcd.key is etcd's alone.
PKI_ORCHESTRATOR_FILES = (CA_CERT, CLIENT_CERT, CLIENT_KEY)


def default_run_as() -> str:
    """uid:gid for the orchestrator: the image's mao user under root, else whoever installs."""
    if os.geteuid() == 0:
        return f"{MAO_UID}:{MAO_UID}"
    return f"{os.getuid()}:{os.getgid()}"


def existing_files(directory: Path) -> list[Path]:
    return [p for p in (directory / COMPOSE_FILE, *(directory / n for n in PRIVATE_FILES)) if p.exists()]


def write_install(config: InstanceConfig, keys: Secrets) -> list[Path]:
    """Write the install directory; returns the files and folders written."""
    config.directory.mkdir(parents=True, exist_ok=True)
    folders = [config.data_dir, config.directory / "etcd", config.directory / "postgres"]
    for folder in folders:
        # etcd refuses a data dir others can read; the rest holds private data too. (etcd's and
        # PostgreSQL's entrypoints hand their folders to their own users as they start.)
        folder.mkdir(mode=0o700, exist_ok=True)
    uid, gid = (int(part) for part in config.run_as.split(":"))
    if os.geteuid() == 0 and (config.data_dir.stat().st_uid, config.data_dir.stat().st_gid) != (uid, gid):
        os.chown(config.data_dir, uid, gid)
    compose = config.directory / COMPOSE_FILE
    compose.write_text(
        compose_text(config, header=f"# MAO instance {config.name}, written by maoctl instance install.\n")
    )
    dotenv = config.directory / DOTENV
    dotenv.write_text(dotenv_text(config))
    # Owned by the installing user (compose reads them as that user and hands each service its own).
    private = []
    for name, text in private_texts(config, keys).items():
        write_private(config.directory / name, text)
        private.append(config.directory / name)
    return [compose, dotenv, *private, *folders]


def hand_over_pki(config: InstanceConfig, written: list[Path]) -> list[Path]:
    """Give the orchestrator's user what it reads of ``<dir>/pki`` (the folder, ``ca.crt``,
    ``client.crt``, ``client.key``), as the data folder is handed over; keys stay 0600 and the folder
    0700, so no one else reads them. ``etcd.key`` keeps its owner: etcd's entrypoint (root) copies the
    etcd files for its own user, and the etcd healthcheck runs as the container's root. Returns
    ``written`` unchanged."""
    if not config.tls or os.geteuid() != 0:
        return written  # not root: the installing user owns them and the orchestrator runs as it
    uid, gid = (int(part) for part in config.run_as.split(":"))
    for path in (config.pki_dir, *(config.pki_dir / name for name in PKI_ORCHESTRATOR_FILES)):
        if path.exists() and (path.stat().st_uid, path.stat().st_gid) != (uid, gid):
            os.chown(path, uid, gid)
    return written


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
