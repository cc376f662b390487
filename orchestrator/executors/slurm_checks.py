"""What a Slurm backend accepts and says about itself: pure functions of its settings and of what the
cluster is (``ClusterFacts``, from sinfo), so that each rule is tested without a cluster.

A step is refused at ``POST /pipeline/init`` (``validate``) for what can never run: root, the Docker
socket, a placement or env the job cannot carry, more GPUs, memory or time than any node of the
partition has. What the cluster cannot run *now* (nodes down, busy) is not refused: it waits, within
the step's ``start_timeout``, and ends ``unschedulable`` past it.
"""

from __future__ import annotations

from executor.wire.images import image_problem

from ..config.backends.slurm import SlurmSettings
from .seam import Capabilities, ContainerSpec, DataMode, Health
from .slurm_cli import ClusterFacts
from .slurm_command import env_problem, job_memory_mib, placement_problem, where

KIND = "slurm"
# What the job's runtime enforces on every container (slurm_command.run_arguments), and Slurm itself.
ENFORCED = frozenset(
    {"memory", "cpus", "pids", "no_new_privileges", "read_only_root", "placement", "start_timeout"}
)


def capabilities_of(settings: SlurmSettings, facts: ClusterFacts | None) -> Capabilities:
    partition = facts.partition(settings.partition) if facts else None
    gpus = partition.max_gpus if partition is not None else None
    notes = (
        f"every node runs the container runtime ({settings.runtime}) for the job's user and holds the "
        "tools' images (loaded from the same archive: MAO runs the image id it resolved, never pulls)",
        f"{settings.shared_root} must be mounted at this same path on the orchestrator's host and every node",
        "memory, CPU and process limits are the runtime's (the container is not in the job's cgroup); "
        "the job asks Slurm for the same memory plus JOB_MEMORY_OVERHEAD",
        "the tool's environment, private values too, is a file (0600) on the shared root while the job "
        "lives: readable by the job's user and by root on the nodes and the file server",
        "a job's comment (MAO's identity) and command line are visible to the cluster's users",
    )
    return Capabilities(
        kind=KIND,
        data_modes=frozenset({DataMode.SHARED}),
        # Unknown (the controller did not answer yet): sbatch is asked, and Slurm decides at submit.
        enforces=ENFORCED | ({"gpus"} if gpus is None or gpus else set()),
        gpus=gpus,
        notes=notes,
    )


def health_of(
    settings: SlurmSettings, facts: ClusterFacts | None, unreachable: str | None, *, root: str | None
) -> Health:
    """Healthy: the controller answers, the partition is up with a node up, the shared root takes
    attempts (``root``: staging's ``root_problem``)."""
    details = {
        "partition": settings.partition or "(the cluster's default)",
        "runtime": settings.runtime,
        "shared_root": str(settings.shared_root),
    }
    if facts is None:
        return Health(ok=False, message=unreachable or "the controller does not answer", details=details)
    problems = []
    partition = facts.partition(settings.partition)
    if partition is None:
        wanted = f"partition {settings.partition}" if settings.partition else "default partition"
        problems.append(f"the cluster has no {wanted} (partitions: {', '.join(sorted(facts.partitions))})")
    else:
        details["partition"] = partition.name
        details["nodes"] = f"{len(partition.usable)} of {len(partition.nodes)} up"
        details["gpus"] = str(partition.max_gpus)
        if not partition.up:
            problems.append(f"partition {partition.name} is down")
        elif not partition.usable:
            problems.append(f"no node of partition {partition.name} is up")
    if root:
        problems.append(root)
    return Health(ok=not problems, message="; ".join(problems) or "ok", details=details)


def spec_problem(spec: ContainerSpec, staging_problem: str | None) -> tuple[str, str] | None:
    """(the step field, why) for what no Slurm cluster runs as asked, or None."""
    if spec.user[0] == 0:
        return "user", "user: tools never run as root (uid 0)"
    if spec.docker_socket:
        return "docker_socket", "docker_socket: the Docker socket is never offered on a cluster"
    for image in (spec.image, spec.image_id):
        problem = image_problem(image) if image is not None else None
        if problem:  # an argument of the runtime: never one it could read as an option
            return "image", f"image: {image!r} {problem}"
    problem = placement_problem(spec.placement)
    if problem:
        return "placement", problem
    problem = env_problem(spec.env)
    if problem:
        return "env", problem
    if staging_problem:
        return "user", staging_problem
    return None


def cluster_problem(
    spec: ContainerSpec, settings: SlurmSettings, facts: ClusterFacts | None
) -> tuple[str, str] | None:
    """(the step field, why) for what this cluster can never run, or None (also when the controller
    does not answer: sbatch finds out at submit)."""
    if facts is None:
        return None
    wanted = where(spec, settings).partition
    partition = facts.partition(wanted)
    if partition is None:
        field = "placement" if "partition" in spec.placement else "backend"
        name = f"partition {wanted}" if wanted else "default partition"
        return field, f"partition: the cluster has no {name} (it has {', '.join(sorted(facts.partitions))})"
    if spec.limits.gpus > partition.max_gpus:
        return "gpus", (
            f"gpus: {spec.limits.gpus} GPUs asked, and no node of partition {partition.name} has more "
            f"than {partition.max_gpus}"
        )
    memory = job_memory_mib(spec, settings)
    if memory is not None and partition.max_memory_mb and memory > partition.max_memory_mb:
        return "memory", (
            f"memory: the job needs {memory} MiB (the step's memory and JOB_MEMORY_OVERHEAD), and no node "
            f"of partition {partition.name} has more than {partition.max_memory_mb} MiB"
        )
    if partition.time_limit is not None and spec.timeout > partition.time_limit:
        return "timeout", (
            f"timeout: {spec.timeout:g}s is past partition {partition.name}'s time limit of "
            f"{partition.time_limit:g}s"
        )
    return None
