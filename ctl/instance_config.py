"""What an instance is, as the installer asks it: ``InstanceConfig``, its images and its folders.

The compose file (``compose``) and the env files (``env_files``) are both built from one
``InstanceConfig``; the installer's answers (``ctl.wizard.answers``) fill it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import __version__

from .cluster import CLIENT_PORT, PEER_PORT, peer_url, url_host
from .dockerfiles import MAO_UID

# The variable in .env that names each service's image (compose substitutes it).
IMAGE_VARIABLES = {
    "orchestrator": "MAO_ORCHESTRATOR_IMAGE",
    "executor": "MAO_EXECUTOR_IMAGE",
    "etcd": "MAO_ETCD_IMAGE",
    "postgres": "MAO_POSTGRES_IMAGE",
}


def default_images(prefix: str = "mao-") -> dict[str, str]:
    """The tags scripts/images.sh builds (MAO_IMAGE_PREFIX is ``prefix``)."""
    return {
        "orchestrator": f"{prefix}orchestrator:{__version__}",
        "executor": f"{prefix}executor:{__version__}",
        "etcd": f"{prefix}etcd:bookworm",
        "postgres": f"{prefix}postgres:bookworm",
    }


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
    etcd_client_port: int = CLIENT_PORT
    etcd_peer_port: int = PEER_PORT
    labels: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=default_images)
    # uid:gid the orchestrator runs as: the owner of the data folder (the image's mao user by default).
    run_as: str = f"{MAO_UID}:{MAO_UID}"
    # etcd's clients and peers over TLS with client certificates (<directory>/pki); False only for a
    # plain-HTTP etcd chosen explicitly.
    tls: bool = True
    # A federation tried on one machine: ``ip`` is a loopback address, and the API listens there
    # (not on every address of the host).
    single_host: bool = False

    @property
    def joining(self) -> bool:
        return self.initial_cluster is not None

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def peer_url(self) -> str:
        return peer_url(self.ip, self.etcd_peer_port, tls=self.tls)

    @property
    def pki_dir(self) -> Path:
        """This instance's certificates (ctl.pki); mounted read-only at PKI_MOUNT."""
        return self.directory / "pki"

    @property
    def ca_dir(self) -> Path:
        """The federation CA, only in the founding instance's directory; never mounted anywhere."""
        return self.directory / "ca"

    @property
    def api_host(self) -> str:
        """Where the API listens: every address (other machines' instances call it; the token guards
        it), or for a single-host federation its own loopback address only."""
        return self.ip if self.single_host else "0.0.0.0"

    @property
    def api_url(self) -> str:
        """Where maoctl and the healthcheck on this host reach the API."""
        return f"http://{url_host(self.ip) if self.single_host else '127.0.0.1'}:{self.api_port}"


def project_name(instance: str) -> str:
    """A compose project name (lowercase letters, digits, '-', '_') for the instance."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in instance.lower())
    return name if name.startswith("mao") else f"mao-{name}"
