"""What MAO asks of Slurm for one attempt: pure functions, no I/O.

- ``sbatch_arguments``: the batch job (``sbatch --parsable ... slurm_job.sh ARGS``), every value
  validated before it becomes one list element (never a shell string);
- ``run_arguments``: what the job's fixed script (slurm_job.sh) gives the container runtime after
  ``run``: MAO's trust rules (never uid 0, no capability, no-new-privileges, limits, no network,
  read-only root, an init that forwards signals) and the staged folders;
- the identity in the job's comment (``comment``; read back by slurm_answers.labels_of).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config.backends.slurm import SLURM_NAME, SlurmSettings
from .seam import INPUT_MOUNT, OUTPUT_MOUNT, ContainerSpec
from .slurm_answers import COMMENT_PREFIX
from .slurm_files import JobFiles

DEFAULT_PIDS = 512  # as the local executor: a fork bomb is bounded even when a step sends no limit
MIB = 1024**2
# The step's placement keys this backend takes: the Slurm options a group chooses per step.
PLACEMENT_KEYS = ("partition", "account", "qos", "constraint", "reservation")
# A node-feature expression (--constraint): feature names and Slurm's operators, nothing a shell or
# sbatch's option parser would read otherwise.
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.&|()\[\]*:-]{1,256}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# -- identity ---------------------------------------------------------------------------------------


def comment(spec: ContainerSpec) -> str:
    """The job's comment: MAO's identity labels as JSON (visible to the cluster's users: no secret)."""
    return COMMENT_PREFIX + json.dumps(spec.all_labels(), sort_keys=True, separators=(",", ":"))


def instance_prefix(name: str) -> str:
    """The part of an object name (``Identity.object_name``) that is the same for all of an instance's
    attempts: ``mao-<instance hash>-``."""
    return "-".join(name.split("-", 2)[:2]) + "-"


# -- the request ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a job goes: the backend's settings, overridden by the step's placement."""

    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    reservation: str | None


def placement_problem(placement: Mapping[str, str]) -> str | None:
    """Why ``placement`` cannot become sbatch options, or None."""
    for key, value in placement.items():
        if key not in PLACEMENT_KEYS:
            return (
                f"placement: {key!r} is not a placement a Slurm backend takes (it takes "
                f"{', '.join(PLACEMENT_KEYS)}; node features go in 'constraint')"
            )
        pattern = _CONSTRAINT if key == "constraint" else SLURM_NAME
        if not pattern.match(value):
            return f"placement: {value!r} is not a valid {key}"
    return None


def where(spec: ContainerSpec, settings: SlurmSettings) -> Where:
    placement = spec.placement
    return Where(
        partition=placement.get("partition", settings.partition),
        account=placement.get("account", settings.account),
        qos=placement.get("qos", settings.qos),
        constraint=placement.get("constraint"),
        reservation=placement.get("reservation"),
    )


def env_problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot go through the runtime's env file (one KEY=VALUE a line), or None."""
    for key, value in env.items():
        if not _ENV_KEY.fullmatch(key):
            return f"env: {key!r} is not a variable name the container runtime takes"
        if "\n" in value or "\r" in value or "\0" in value:
            return f"env: the value of {key} holds a line break, which the runtime's env file cannot carry"
    return None


def env_file(env: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in env.items())


def time_limit_minutes(timeout: float) -> int:
    """sbatch's --time, in whole minutes (Slurm's unit) and never less than the step's timeout. The
    backend's own watchdog ends the job at the timeout itself; this is the cluster's guarantee."""
    return max(1, math.ceil(timeout / 60))


def cpus_per_task(spec: ContainerSpec, max_cpus: int | None) -> int:
    wanted = max(1, math.ceil(spec.limits.cpus)) if spec.limits.cpus else 1
    # As locally and on swarm: a step written for a bigger machine still runs, on the biggest node.
    return min(wanted, max_cpus) if max_cpus else wanted


def job_memory_mib(spec: ContainerSpec, settings: SlurmSettings) -> int | None:
    """sbatch's --mem (MiB): the container's memory and the job's own (script, runtime client)."""
    if spec.limits.memory is None:
        return None
    return math.ceil((spec.limits.memory + settings.job_memory_overhead) / MIB)


def run_arguments(
    spec: ContainerSpec,
    settings: SlurmSettings,
    *,
    image: str,
    input_folder: Path,
    output_folder: Path,
    env: Path,
    cpus: int,
) -> list[str]:
    """What follows ``<runtime> run --name NAME [gpu devices]`` in the job: MAO's trust rules."""
    uid, gid = spec.user
    if uid == 0:
        raise ValueError("tools never run as root")
    args = [
        f"--user={uid}:{gid}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--pids-limit={spec.limits.pids or DEFAULT_PIDS}",
        f"--cpus={min(spec.limits.cpus, cpus) if spec.limits.cpus else cpus:g}",
        "--network=none",
        "--read-only",
        f"--tmpfs=/tmp:rw,nosuid,nodev,size={settings.tmp_size},mode=1777",
        # An init as PID 1: the signal the runtime's client forwards reaches the tool.
        "--init",
        "--pull=never",
        f"--env-file={env}",
        f"--volume={input_folder}:{INPUT_MOUNT}:ro",
        f"--volume={output_folder}:{OUTPUT_MOUNT}:rw",
    ]
    if spec.limits.memory is not None:
        # Swap equal to memory: no swap on top, as on the local executor.
        args += [f"--memory={spec.limits.memory}", f"--memory-swap={spec.limits.memory}"]
    for key, value in sorted(spec.all_labels().items()):
        args.append(f"--label={key}={value}")
    args.append(image)
    if spec.cmd is not None:
        args += list(spec.cmd)  # the image's entrypoint stays, as on the local executor
    return args


def sbatch_arguments(
    spec: ContainerSpec,
    settings: SlurmSettings,
    *,
    script: Path,
    files: JobFiles,
    run: list[str],
    image: str,
    cpus: int,
) -> list[str]:
    """``sbatch`` and its arguments (without the binary): one job, MAO's name and comment, no requeue
    (MAO retries), the limits, where it goes, the fixed script and what it runs."""
    place = where(spec, settings)
    args = [
        "--parsable",
        f"--job-name={spec.name}",
        f"--comment={comment(spec)}",
        f"--output={files.out}",
        f"--error={files.err}",
        "--open-mode=append",  # the files exist already, private (0600): keep them so
        f"--chdir={settings.shared_root}",
        "--export=NONE",  # nothing of the orchestrator's environment reaches the node
        "--no-requeue",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={cpus}",
        f"--time={time_limit_minutes(spec.timeout)}",
    ]
    memory = job_memory_mib(spec, settings)
    if memory is not None:
        args.append(f"--mem={memory}M")
    if spec.limits.gpus:
        args.append(f"--gres=gpu:{spec.limits.gpus}")
    for option, value in (
        ("partition", place.partition),
        ("account", place.account),
        ("qos", place.qos),
        ("constraint", place.constraint),
        ("reservation", place.reservation),
    ):
        if value is not None:
            args.append(f"--{option}={value}")
    runtime = settings.runtime_words()
    gpus = settings.gpu_mode if spec.limits.gpus else "none"
    args += [str(script), "run", spec.name, image, gpus, str(len(runtime)), *runtime, "--", *run]
    return args


def remove_arguments(name: str, node: str, settings: SlurmSettings, *, script: Path) -> list[str]:
    """``sbatch`` arguments of the job that removes container ``name`` from ``node``: for a job that
    was killed (SIGKILL) before its script could remove it, or whose node failed. No output files, no MAO comment (it is
    not an attempt: list_managed does not see it), one minute at most."""
    runtime = settings.runtime_words()
    args = [
        "--parsable",
        f"--job-name={name}-remove",
        "--output=/dev/null",
        "--error=/dev/null",
        f"--chdir={settings.shared_root}",
        "--export=NONE",
        "--no-requeue",
        f"--nodelist={node}",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--mem=64M",
        "--time=1",
        # A node that never comes back: Slurm drops the job after a day rather than keep it queued.
        "--deadline=now+1day",
    ]
    place = settings.partition, settings.account, settings.qos
    for option, value in zip(("partition", "account", "qos"), place, strict=True):
        if value is not None:
            args.append(f"--{option}={value}")
    return [*args, str(script), "remove", name, "-", "none", str(len(runtime)), *runtime, "--"]


def parse_job_id(stdout: str) -> str:
    """``sbatch --parsable`` prints ``id`` or ``id;cluster``."""
    job_id = stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed {stdout.strip()[:200]!r}, not a job id")
    return job_id
