"""How MAO reads Slurm's answers: pure functions, no I/O. The queue's lines (``SQUEUE_FORMAT`` /
``parse_squeue``), the jobcomp file's (``parse_jobcomp_line``), the job script's report on its stderr
(``parse_report``), the identity in a job's comment (``labels_of``) and how a job ended
(``job_end``: Slurm's state, the exit status and the report, as one of the seam's ends).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from .seam import INSTANCE_LABEL, EndKind

COMMENT_PREFIX = "mao/v1 "
# sbatch refusing a job for now, not for ever: a per-user or per-QOS submit limit is reached.
_SUBMIT_LIMIT = re.compile(r"MaxSubmit|submit (job )?limit|AssocMaxSubmitJob|QOSMaxSubmitJob", re.IGNORECASE)

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
SQUEUE_FIELDS = (
    "JobID",
    "Name",
    "State",
    "Reason",
    "BatchHost",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "exit_code",
    "Comment",
)
SQUEUE_FORMAT = ",".join(f"{field}:|" for field in SQUEUE_FIELDS)


def labels_of(text: str) -> dict[str, str] | None:
    """The labels in a job comment ``comment`` wrote, or None for any other comment."""
    if not text.startswith(COMMENT_PREFIX):
        return None
    try:
        value = json.loads(text[len(COMMENT_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return value


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
        return Verdict(
            EndKind.OOM_KILLED, 137, "killed by the kernel: out of memory (the step's memory limit)"
        )
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


def submit_limit_reached(message: str) -> bool:
    """Whether sbatch's refusal says the cluster's submit limit is reached (the job may go later)."""
    return bool(_SUBMIT_LIMIT.search(message))
