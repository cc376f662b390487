"""A Kubernetes backend's settings (docs/backends.md#kubernetes): one pydantic model, checked at start.

Read from ``MAO_BACKEND_<NAME>_<KEY>`` (KEY: a field name in upper case, e.g.
``MAO_BACKEND_LAB_NAMESPACE=mao``) or the same keys in MAO_CONFIG_FILE.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ...domain.sizes import parse_size

# A namespace or service account name: a DNS-1123 label.
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# An extended resource name such as nvidia.com/gpu or amd.com/gpu.
_RESOURCE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?/[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


def _size(value: object) -> object:
    return parse_size(value) if isinstance(value, str) else value


Size = Annotated[int, BeforeValidator(_size), Field(gt=0)]


class KubernetesSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Credentials: a kubeconfig file (and a context of it), or the pod's own service account when the
    # orchestrator runs inside the cluster (IN_CLUSTER=1). One of the two.
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    # Where the Jobs go, and as whom their pods run (the service account's token is never mounted).
    namespace: str = "default"
    service_account: str | None = None
    # The fetch data mode: the image of the stage-in and stage-out containers (busybox: sh, tar, wget,
    # nc; scripts/staging-image.sh builds it), and the URL pods reach this orchestrator's staging
    # routes at (plain http: busybox cannot upload over TLS; see docs/backends.md#fetch).
    staging_image: str
    staging_url: str
    # Seconds the stage-in and the stage-out may take together: part of each ticket's lifetime and of
    # the Job's deadline.
    stage_seconds: float = Field(default=600.0, gt=0, le=86400)
    # Seconds a stage-in or stage-out waits for this orchestrator to answer at all (it may be
    # restarting, then adopts the pod) before it gives up; inside STAGE_SECONDS.
    staging_wait: float = Field(default=120.0, ge=0, le=3600)
    stage_memory: Size = 64 * 1024**2
    stage_cpus: float = Field(default=0.25, gt=0, le=64)
    # Seconds an attempt may wait to be scheduled when its step sets no start_timeout.
    start_timeout: float = Field(default=600.0, gt=0)
    # How long an ended Job stays (the orchestrator has copied its log and output by then).
    ttl_seconds_after_finished: int = Field(default=3600, ge=0, le=7 * 86400)
    # The writable /tmp of every container (an emptyDir: the root file system is read-only), and the
    # bound of the input and output emptyDirs (none: the node's ephemeral storage).
    tmp_size: Size = 64 * 1024**2
    data_size: Size | None = None
    # The extended resource a step's ``gpus`` asks for, and the most one node has where this account
    # may not list nodes (None: as the nodes' allocatable says, unknown when they cannot be read).
    gpu_resource: str = "nvidia.com/gpu"
    gpus: int | None = Field(default=None, ge=0, le=64)
    # The kubelet's podPidsLimit on the nodes, as the operator knows it: Kubernetes has no per-pod
    # process limit in the pod spec. Unset: GET /backends says the cluster does not promise one.
    pod_pids_limit: int | None = Field(default=None, gt=0)
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    image_pull_secret: str | None = None
    # Seconds a cancelled pod gets to stop, and cancel waits for the Job and its pods to be gone.
    cancel_grace_seconds: int = Field(default=5, ge=0, le=300)
    cancel_timeout: float = Field(default=60.0, gt=0, le=600)
    # Seconds between two looks at a waited Job besides the watch's events.
    poll_interval: float = Field(default=5.0, ge=0.05, le=300)
    # Where this backend keeps its copy of every attempt's log (default <MAO_DATA_DIR>/kubernetes/<name>).
    state_dir: Path | None = None
    max_output_files: int = Field(default=100_000, gt=0)

    @field_validator("namespace", "service_account", "image_pull_secret")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kubernetes name (lowercase letters, digits and '-', at most 63)")
        return value

    @field_validator("gpu_resource")
    @classmethod
    def _resource(cls, value: str) -> str:
        if not _RESOURCE.fullmatch(value):
            raise ValueError(f"{value!r} is not an extended resource name such as nvidia.com/gpu")
        return value

    @field_validator("staging_url")
    @classmethod
    def _staging_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment or parts.username:
            raise ValueError(
                f"{value!r}: give http://HOST[:PORT][/PREFIX], the address pods reach this orchestrator at "
                "(the busybox stage-out uploads with nc, which has no TLS; keep it on the cluster's network)"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> KubernetesSettings:
        if self.in_cluster and self.kubeconfig is not None:
            raise ValueError("in_cluster and kubeconfig: give one of the two")
        if self.kubeconfig is not None and not self.kubeconfig.is_file():
            raise ValueError(f"kubeconfig: {str(self.kubeconfig)!r} is not a file on this host")
        if self.state_dir is not None and not self.state_dir.is_absolute():
            raise ValueError(f"state_dir: {str(self.state_dir)!r} must be an absolute path")
        return self
