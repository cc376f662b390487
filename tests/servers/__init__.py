"""Real servers for integration tests and bench scripts: etcd, dockerd, PostgreSQL, executor, orchestrator.

Importable without pytest (``from tests.servers import start_etcd``). Every helper starts REAL
components as subprocesses (argument lists only, never a shell), writes their output to a log
file, and raises :class:`ServerStartError` with the last lines of that log when something does
not come up. Everything started here is also registered for clean-up at interpreter exit.
"""

from .docker import (
    BUSYBOX_LABEL,
    BUSYBOX_LABEL_VERSION,
    build_busybox_image,
    docker_ping,
    ensure_docker,
    stop_docker,
)
from .etcd import EtcdServer, make_member_pki, start_etcd, start_etcd_cluster
from .kube_fake import KubeFake, start_kube_fake
from .postgres import PostgresServer, start_postgres
from .process import (
    LOCALHOST,
    REPO_ROOT,
    ManagedProcess,
    ServerStartError,
    free_port,
    http_status,
    is_root,
    wait_http,
    wait_until,
)
from .services import (
    EXECUTOR_INSTANCES,
    TOKENS,
    ServiceProcess,
    _base_env,
    remove_submitted,
    start_executor,
    start_orchestrator,
    token_for,
)
from .slurm import SlurmCluster, slurm_missing, start_slurm
from .staging_server import StagingServer, start_staging_server
from .swarm import SwarmHold, acquire_swarm, release_swarm, renew_swarm, single_node_swarm

__all__ = [
    "EXECUTOR_INSTANCES",
    "start_kube_fake",
    "start_staging_server",
    "BUSYBOX_LABEL",
    "BUSYBOX_LABEL_VERSION",
    "LOCALHOST",
    "REPO_ROOT",
    "TOKENS",
    "EtcdServer",
    "KubeFake",
    "StagingServer",
    "ManagedProcess",
    "PostgresServer",
    "ServerStartError",
    "ServiceProcess",
    "SlurmCluster",
    "SwarmHold",
    "_base_env",
    "acquire_swarm",
    "build_busybox_image",
    "docker_ping",
    "ensure_docker",
    "free_port",
    "http_status",
    "is_root",
    "make_member_pki",
    "release_swarm",
    "remove_submitted",
    "renew_swarm",
    "single_node_swarm",
    "slurm_missing",
    "start_etcd",
    "start_etcd_cluster",
    "start_executor",
    "start_orchestrator",
    "start_postgres",
    "start_slurm",
    "stop_docker",
    "token_for",
    "wait_http",
    "wait_until",
]
