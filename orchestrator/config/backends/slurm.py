"""A Slurm backend's settings (docs/backends.md#slurm): one pydantic model, checked at start.

Read from ``MAO_BACKEND_<NAME>_<KEY>`` (KEY: a field name in upper case, e.g.
``MAO_BACKEND_HPC_PARTITION=gpu``) or the same keys in MAO_CONFIG_FILE.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...domain.sizes import parse_size

# Slurm's names for partitions, accounts, QOS and reservations: no spaces, no shell or list syntax.
SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Characters a path may not hold: sbatch takes '%' as a pattern, the runtime's -v splits on ':' and ','.
_PATH_FORBIDDEN = re.compile(r"[%:,\s\\'\"]")
_RUNTIME_OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=[^\s]*)?$")


class SlurmSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Mounted at this same path on the orchestrator's host and on every node (staging.py); the jobs'
    # output files live here too.
    shared_root: Path
    # Where jobs go unless a step's placement says otherwise (None: the cluster's default partition).
    partition: str | None = None
    # The account jobs are charged to unless a step's placement says otherwise (None: the user's default).
    account: str | None = None
    qos: str | None = None
    # The container runtime on the nodes, and its path there (None: found on the node's PATH).
    runtime: Literal["docker", "podman"] = "docker"
    runtime_path: str | None = None
    # Global options given to the runtime before "run" (e.g. podman's --root, --runroot,
    # --cgroup-manager=cgroupfs), comma-separated, each --name or --name=value.
    runtime_options: tuple[str, ...] = ()
    # How GPUs reach the container: "docker" (--gpus device=...), "cdi" (--device nvidia.com/gpu=...);
    # None: docker's for docker, cdi for podman.
    gpu_devices: Literal["docker", "cdi"] | None = None
    # Folder holding sbatch, squeue, scontrol, scancel and sinfo (None: this host's PATH).
    slurm_bin: Path | None = None
    # The slurm.conf those commands read (None: the host's own, or SLURM_CONF of the orchestrator).
    slurm_conf: Path | None = None
    # The jobcomp/filetxt file (JobCompLoc), readable here: how a job the controller has forgotten ended.
    jobcomp_file: Path | None = None
    # Seconds an attempt may wait to be scheduled when its step sets no start_timeout.
    start_timeout: float = Field(default=600.0, gt=0)
    # Memory the job asks for beyond the container's (the runtime's client and this job's script).
    job_memory_overhead: int = Field(default=128 * 1024**2, ge=0)
    # The size of the tool's writable /tmp (the container's root is read-only).
    tmp_size: int = Field(default=256 * 1024**2, ge=1024**2)
    # Seconds between a job's end and reading its output from the shared root (NFS attribute caches).
    output_settle_seconds: float = Field(default=2.0, ge=0, le=600)
    # Seconds between two looks at the queue (one squeue serves every attempt).
    poll_interval: float = Field(default=1.0, ge=0.1, le=60)
    # Seconds cancel waits for a job to have ended.
    cancel_timeout: float = Field(default=60.0, gt=0, le=900)
    # Slurm commands running at once (sbatch of a 200-shard fan-out is queued behind these).
    max_commands: int = Field(default=8, ge=1, le=64)

    @field_validator("runtime_options", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("runtime_options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for option in value:
            if not _RUNTIME_OPTION.fullmatch(option):
                raise ValueError(f"{option!r}: each runtime option is --name or --name=value, without spaces")
        return value

    @field_validator("partition", "account", "qos")
    @classmethod
    def _slurm_name(cls, value: str | None) -> str | None:
        if value is not None and not SLURM_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a Slurm name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("job_memory_overhead", "tmp_size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("runtime_path")
    @classmethod
    def _runtime_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or _PATH_FORBIDDEN.search(value)):
            raise ValueError(f"{value!r} must be an absolute path without spaces, quotes, '%', ':' or ','")
        return value

    @model_validator(mode="after")
    def _check(self) -> SlurmSettings:
        root = self.shared_root
        if not root.is_absolute():
            raise ValueError(f"shared_root: {str(root)!r} must be an absolute path")
        if _PATH_FORBIDDEN.search(str(root)):
            raise ValueError(f"shared_root: {str(root)!r} may not hold spaces, quotes, '%', ':' or ','")
        if not root.is_dir():
            raise ValueError(f"shared_root: {str(root)!r} is not a folder on this host")
        if self.slurm_bin is not None and not (self.slurm_bin / "sbatch").exists():
            raise ValueError(f"slurm_bin: {str(self.slurm_bin)!r} holds no sbatch")
        if self.slurm_conf is not None and not self.slurm_conf.is_file():
            raise ValueError(f"slurm_conf: {str(self.slurm_conf)!r} is not a file")
        return self


    @property
    def gpu_mode(self) -> Literal["docker", "cdi"]:
        if self.gpu_devices is not None:
            return self.gpu_devices
        return "docker" if self.runtime == "docker" else "cdi"

    def runtime_words(self) -> list[str]:
        """The runtime as the job calls it: its binary and global options."""
        return [self.runtime_path or self.runtime, *self.runtime_options]
