"""A swarm backend's settings (docs/backends.md#docker-swarm): one pydantic model, checked at start.

Read from ``MAO_BACKEND_<NAME>_<KEY>`` (KEY: a field name in upper case, e.g.
``MAO_BACKEND_GPU_SHARED_ROOT=/scratch/mao``) or the same keys in MAO_CONFIG_FILE.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Docker 20.10: the first version whose services take CapabilityDrop, Pids limits and replicated jobs.
DEFAULT_VERSION = "1.41"
_VERSION = re.compile(r"^1\.(\d+)$")


@dataclass(frozen=True)
class TlsFiles:
    """The client certificate, key and the CA of a Docker engine listening on TCP with TLS."""

    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def host_problem(host: str, tls: bool) -> str | None:
    """Why ``host`` (a DOCKER_HOST value) cannot be used, or None. A TCP engine without TLS is refused
    unless it listens on loopback: its API is root on every node of the swarm."""
    parts = urlsplit(host)
    if parts.scheme == "unix":
        return None if parts.path.startswith("/") else f"{host!r}: a unix socket needs an absolute path"
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        return f"{host!r}: use unix:///path/to/docker.sock or tcp://host:port"
    if not tls and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        return (
            f"{host!r}: a Docker engine on the network needs TLS (the TLS_CA, TLS_CERT and TLS_KEY settings)"
        )
    return None


class SwarmSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # A swarm manager's Docker API: unix:///path or tcp://host:port (TLS unless on loopback).
    docker_host: str = DEFAULT_HOST
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Mounted at this same path on the orchestrator's host and on every node (staging.py).
    shared_root: Path
    # Seconds an attempt may wait to be scheduled (placement, capacity, image) when its step sets none.
    start_timeout: float = Field(default=600.0, gt=0)
    # Run steps although the daemon does not enforce no-new-privileges (said in GET /backends).
    accept_without_no_new_privileges: bool = False
    # Seconds between a task's end and reading its output from the shared root (NFS attribute caches).
    output_settle_seconds: float = Field(default=2.0, ge=0, le=600)
    # Seconds between a task's end and the last read of its log. Docker reports a container's exit
    # once its output is copied, so none is needed on a healthy engine; a slow log driver may want some.
    log_settle_seconds: float = Field(default=0.0, ge=0, le=60)
    # Seconds between two looks at the swarm (one look, three requests, serves every attempt).
    poll_interval: float = Field(default=0.25, ge=0.05, le=60)
    # Seconds cancel waits for the service and its containers to be gone.
    cancel_timeout: float = Field(default=30.0, gt=0, le=600)
    # Swarm networks every task joins (none: the task has only its loopback interface).
    networks: tuple[str, ...] = ()
    # Reserve each step's memory and CPUs, so that Swarm places a task only where they are free.
    reserve_resources: bool = True
    api_version: str = DEFAULT_VERSION
    # GPUs: the generic resource a step's ``gpus`` reserves (the nodes' dockerd
    # ``--node-generic-resource NVIDIA-GPU=...``), and the most one node has where the nodes do not
    # announce them (None: as the nodes announce; 0: this swarm offers none).
    gpu_resource: str = Field(default="NVIDIA-GPU", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
    gpus: int | None = Field(default=None, ge=0, le=64)

    @field_validator("networks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        match = _VERSION.fullmatch(value)
        if not match or int(match.group(1)) < 41:
            raise ValueError(f"{value!r}: 1.41 (Docker 20.10) or later: earlier ones lack replicated jobs")
        return value

    @model_validator(mode="after")
    def _check(self) -> SwarmSettings:
        if not self.shared_root.is_absolute():
            raise ValueError(f"shared_root: {str(self.shared_root)!r} must be an absolute path")
        if not self.shared_root.is_dir():
            raise ValueError(f"shared_root: {str(self.shared_root)!r} is not a folder on this host")
        tls = [self.tls_ca, self.tls_cert, self.tls_key]
        if any(tls) and not all(tls):
            raise ValueError("tls_ca, tls_cert and tls_key go together: set all three or none")
        problem = host_problem(self.docker_host, all(tls))
        if problem:
            raise ValueError(f"docker_host: {problem}")
        return self


    def tls(self) -> TlsFiles | None:
        if self.tls_ca and self.tls_cert and self.tls_key:
            return TlsFiles(self.tls_ca, self.tls_cert, self.tls_key)
        return None
