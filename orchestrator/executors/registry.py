"""The backends an instance runs, built from their checked configuration (``orchestrator/config/backends/``):
one builder per kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config.backends.docker import DockerSettings
from ..config.backends.kinds import BackendConfig
from ..config.backends.slurm import SlurmSettings
from ..config.backends.swarm import SwarmSettings
from . import docker, kubernetes, slurm, swarm
from .seam import Backend

if TYPE_CHECKING:
    from ..config import Settings


def _docker(name: str, given: DockerSettings, settings: Settings) -> Backend:
    # Without a URL of its own: the instance's executor, as MAO_EXECUTOR_* say (checked by config).
    if given.url is None:
        url, fingerprint = settings.executor_url, given.fingerprint() or settings.executor_fingerprint
    else:
        url, fingerprint = given.url, given.fingerprint()
    return docker.DockerBackend(
        name, url, given.token or "", settings.host_path, given.start_timeout, fingerprint, given.gpus
    )


def _swarm(name: str, given: SwarmSettings, settings: Settings) -> Backend:
    return swarm.SwarmBackend(name, given, max_output_bytes=settings.step_max_output)


def _slurm(name: str, given: SlurmSettings, settings: Settings) -> Backend:
    return slurm.SlurmBackend(name, given, max_output_bytes=settings.step_max_output)


BUILDERS: dict[str, Callable[[str, Any, Settings], Backend]] = {
    "docker": _docker,
    "swarm": _swarm,
    "slurm": _slurm,
    "kubernetes": kubernetes.from_instance,
}


def build(config: BackendConfig, instance_settings: Settings) -> Backend:
    return BUILDERS[config.kind](config.name, config.settings, instance_settings)
