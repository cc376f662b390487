"""What MAO asks of Slurm for one attempt, and how it reads Slurm's answers: pure functions, no I/O.

- ``sbatch_arguments``: the batch job (``sbatch --parsable ... slurm_job.sh ARGS``), every value
  validated before it becomes one list element (never a shell string);
- ``run_arguments``: what the job's fixed script (slurm_job.sh) gives the container runtime after
  ``run``: MAO's trust rules (never uid 0, no capability, no-new-privileges, limits, no network,
  read-only root, an init that forwards signals) and the staged folders;
- the identity in the job's comment (``comment`` / ``labels_of``), the queue's lines
  (``SQUEUE_FORMAT`` / ``parse_squeue``), the script's report (``parse_report``) and how a job
  ended (``job_end``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .seam import INPUT_MOUNT, INSTANCE_LABEL, OUTPUT_MOUNT, ContainerSpec, EndKind
from .slurm_settings import SLURM_NAME, SlurmSettings

COMMENT_PREFIX = "mao/v1 "
DEFAULT_PIDS = 512  # as the local executor: a fork bomb is bounded even when a step sends no limit
MIB = 1024**2
# The step's placement keys this backend takes: the Slurm options a group chooses per step.
PLACEMENT_KEYS = ("partition", "account", "qos", "constraint", "reservation")
# A node-feature expression (--constraint): feature names and Slurm's operators, nothing a shell or
# sbatch's option parser would read otherwise.
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.&|()\[\]*:-]{1,256}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Job states (squeue %T). A job in none of these sets is waiting to be scheduled.
STARTED = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESIZING"})
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "PREEMPTED",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)

# squeue -O: the comment last, so that a '|' in it cannot shift a field. Times as epoch seconds
# (SLURM_TIME_FORMAT=%s in the command's environment).
SQUEUE_FIELDS = ("JobID", "Name", "State", "Reason", "BatchHost", "SubmitTime", "StartTime", "EndTime", "exit_code", "Comment")
SQUEUE_FORMAT = ",".join(f"{field}:|" for field in SQUEUE_FIELDS)


# -- identity ---------------------------------------------------------------------------------------


def comment(spec: ContainerSpec) -> str:
    """The job's comment: MAO's identity labels as JSON (visible to the cluster's users: no secret)."""
    return COMMENT_PREFIX + json.dumps(spec.all_labels(), sort_keys=True, separators=(",", ":"))


def labels_of(text: str) -> dict[str, str] | None:
    """The labels in a job comment ``comment`` wrote, or None for any other comment."""
    if not text.startswith(COMMENT_PREFIX):
        return None
    try:
        value = json.loads(text[len(COMMENT_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return value


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
        if not _ENV_KEY.match(key):
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


@dataclass(frozen=True)
class JobFiles:
    """What one job reads and writes on the shared root besides the staged folders."""

    env: Path  # the tool's environment (0600), inside the staged folder
    out: Path  # the tool's output: the log MAO follows
    err: Path  # the job script's report and Slurm's own messages


def job_files(root: Path, name: str) -> JobFiles:
    return JobFiles(env=root / name / "env", out=root / f"{name}.out", err=root / f"{name}.err")


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
    args += [str(script), spec.name, image, gpus, str(len(runtime)), *runtime, "--", *run]
    return args


def parse_job_id(stdout: str) -> str:
    """``sbatch --parsable`` prints ``id`` or ``id;cluster``."""
    job_id = stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed {stdout.strip()[:200]!r}, not a job id")
    return job_id


# -- the queue ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """One job as squeue shows it."""

    job_id: str
    name: str
    state: str
    reason: str
    node: str | None
    submitted: float | None
    started: float | None  # only for a job that started (squeue shows an estimate before)
    ended: float | None  # only for a job that ended
    exit_status: int | None  # the batch script's raw wait status
    labels: dict[str, str] | None  # from a comment MAO wrote

    @property
    def has_started(self) -> bool:
        return self.state in STARTED or (self.state in ENDED and self.started is not None)

    @property
    def has_ended(self) -> bool:
        return self.state in ENDED

    @property
    def instance(self) -> str | None:
        return (self.labels or {}).get(INSTANCE_LABEL)


def _epoch(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def parse_squeue_line(line: str) -> JobView | None:
    """One line of ``squeue -h -O SQUEUE_FORMAT``, or None for a line that is not one."""
    parts = line.split("|", len(SQUEUE_FIELDS) - 1)
    if len(parts) != len(SQUEUE_FIELDS):
        return None
    job_id, name, state, reason, node, submitted, started, ended, status, text = parts
    if not job_id.isdigit() or not name:
        return None
    state = state.strip().split()[0] if state.strip() else ""
    text = text[:-1] if text.endswith("|") else text
    ended_state = state in ENDED
    return JobView(
        job_id=job_id,
        name=name,
        state=state,
        reason=reason.strip(),
        node=node if node and node.lower() not in ("n/a", "(null)", "none") else None,
        submitted=_epoch(submitted),
        started=_epoch(started) if (state in STARTED or ended_state) else None,
        ended=_epoch(ended) if ended_state else None,
        exit_status=int(status) if status.strip().isdigit() else None,
        labels=labels_of(text.strip()),
    )


def parse_squeue(stdout: str) -> list[JobView]:
    return [view for line in stdout.splitlines() if (view := parse_squeue_line(line)) is not None]


# -- how it ended ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What the job's script (slurm_job.sh) said on its stderr."""

    node: str | None = None
    started: bool = False  # the container was started
    exit_code: int | None = None  # the container's
    oom: bool = False  # the runtime says the kernel killed it for memory
    image_unavailable: bool = False
    signal: str | None = None  # the script was told to stop (scancel, time limit)
    error: str | None = None  # the script's own failure (no container, no GPUs)


def parse_report(text: str) -> Report:
    values: dict[str, object] = {}
    for line in text.splitlines():
        if not line.startswith("mao-job: "):
            continue
        key, _, rest = line[len("mao-job: ") :].partition(" ")
        if key == "node":
            values["node"] = rest.strip() or None
        elif key == "start":
            values["started"] = True
        elif key == "exit":
            words = rest.split()
            if words and words[0].isdigit():
                values["exit_code"] = int(words[0])
            values["oom"] = words[1:3] == ["oom", "true"]
        elif key == "image-unavailable":
            values["image_unavailable"] = True
        elif key == "signal":
            values["signal"] = rest.strip()
        elif key == "error":
            values["error"] = rest.strip()
    return Report(**values)  # type: ignore[arg-type]


def wait_status(status: int | None) -> tuple[int | None, int | None]:
    """(exit code, signal) of a raw wait status as Slurm keeps it (768 = exit 3; 9 = SIGKILL)."""
    if status is None:
        return None, None
    signal = status & 0x7F
    return (None, signal) if signal else ((status >> 8) & 0xFF, None)


@dataclass(frozen=True)
class Verdict:
    kind: EndKind
    exit_code: int | None
    message: str


# What MAO did to a job itself, so that its CANCELLED state means that and not an operator's scancel.
MAO_CANCEL = "cancel"
MAO_TIMEOUT = "timeout"
MAO_UNSCHEDULABLE = "unschedulable"


def job_end(view: JobView, report: Report, done_by_mao: str | None, timeout: float) -> Verdict:
    """The seam's end of a job that ended (``view.has_ended``)."""
    code, signal = wait_status(view.exit_status)
    state, where = view.state, f" on node {view.node}" if view.node else ""
    if done_by_mao == MAO_CANCEL:
        return Verdict(EndKind.CANCELLED, None, "cancelled")
    if done_by_mao == MAO_TIMEOUT or state == "TIMEOUT":
        return Verdict(EndKind.TIMED_OUT, None, f"still running after the step's timeout of {timeout:g}s")
    if done_by_mao == MAO_UNSCHEDULABLE:
        return Verdict(EndKind.UNSCHEDULABLE, None, "not started within its start_timeout")
    if report.image_unavailable:
        return Verdict(
            EndKind.IMAGE_UNAVAILABLE,
            None,
            f"the image is not in the container runtime's store{where}: load it on every node",
        )
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return Verdict(EndKind.NODE_LOST, None, f"Slurm ended the job {state}{where} (the node failed)")
    if state == "PREEMPTED":
        return Verdict(EndKind.NODE_LOST, None, f"the job was preempted{where} (MAO retries, never Slurm)")
    if state == "OUT_OF_MEMORY" or (report.oom and report.exit_code == 137):
        return Verdict(EndKind.OOM_KILLED, 137, "killed by the kernel: out of memory (the step's memory limit)")
    if state == "FAILED" and signal == 9 and view.reason == "JobLaunchFailure":
        # Slurm's accounting killed the job for exceeding --mem (ENGINES.md: not OUT_OF_MEMORY here).
        return Verdict(EndKind.OOM_KILLED, 137, "Slurm killed the job: over its memory (--mem)")
    if state == "CANCELLED":
        return Verdict(
            EndKind.NODE_LOST,
            None,
            f"the job was cancelled outside MAO{where} (scancel by an operator, or the cluster): MAO retries",
        )
    if state == "DEADLINE":
        return Verdict(EndKind.UNSCHEDULABLE, None, "Slurm ended the job at its deadline before it could run")
    if report.error is not None and report.exit_code is None:
        return Verdict(EndKind.NODE_LOST, None, f"the job could not run the container{where}: {report.error}")
    if state == "COMPLETED" and code == 0:
        return Verdict(EndKind.COMPLETED, 0, "exit 0")
    if state in ("FAILED", "COMPLETED", "SPECIAL_EXIT") and code is not None:
        exit_code = report.exit_code if report.exit_code is not None else code
        return Verdict(EndKind.FAILED, exit_code, f"exit {exit_code}")
    if signal is not None:
        return Verdict(EndKind.FAILED, 128 + signal, f"the job was killed by signal {signal}{where}")
    return Verdict(EndKind.LOST, None, f"Slurm ended the job {state} ({view.reason or 'no reason given'})")


# -- the job completion file (jobcomp/filetxt) -------------------------------------------------------

_JOBCOMP_FIELD = re.compile(r"(\w+)=(\S*)")


def _local_epoch(text: str) -> float | None:
    """A jobcomp timestamp (the controller's local time, without a zone) as epoch seconds."""
    from datetime import datetime

    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def parse_jobcomp_line(line: str) -> JobView | None:
    """One line of a jobcomp/filetxt file (``JobId=.. Name=.. JobState=.. ExitCode=code:signal ..``)."""
    fields = dict(_JOBCOMP_FIELD.findall(line))
    job_id, name, state = fields.get("JobId", ""), fields.get("Name", ""), fields.get("JobState", "")
    if not job_id.isdigit() or not name or not state:
        return None
    code, _, signal = fields.get("ExitCode", "").partition(":")
    status = None
    if code.isdigit() and signal.isdigit():
        status = int(signal) & 0x7F if int(signal) else (int(code) & 0xFF) << 8
    node = fields.get("NodeList")
    return JobView(
        job_id=job_id,
        name=name,
        state=state.split()[0],
        reason="",
        node=node if node and node != "(null)" and "," not in node else None,
        submitted=_local_epoch(fields.get("SubmitTime", "")),
        started=_local_epoch(fields.get("StartTime", "")),
        ended=_local_epoch(fields.get("EndTime", "")),
        exit_status=status,
        labels=None,
    )
