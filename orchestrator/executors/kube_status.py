"""What a Job and its pod say, as typed values, and how each way they end maps to the seam's ends.

The models hold the part of the Kubernetes objects the backend reads (everything else is ignored),
parsed from the API's JSON at the adapter edge (kube_api.py). ``verdict`` is a pure function of a
Job and its pod (either may be gone), tested without a cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from .kube_pod import STAGE_IN, STAGE_OUT, TOOL
from .seam import End, EndKind


class _K8s(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Meta(_K8s):
    name: str
    uid: str = ""
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None


class Condition(_K8s):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class Waiting(_K8s):
    reason: str | None = None
    message: str | None = None


class Running(_K8s):
    started_at: datetime | None = None


class Terminated(_K8s):
    exit_code: int
    reason: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ContainerState(_K8s):
    waiting: Waiting | None = None
    running: Running | None = None
    terminated: Terminated | None = None


# The container runtime's scheme in front of a status's imageID (dockershim's ``docker://`` and
# ``docker-pullable://``, CRI-O's and containerd's own): how the kubelet reached the image, not which
# bits it is.
_RUNTIME_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


class ContainerStatus(_K8s):
    name: str
    state: ContainerState = ContainerState()
    # The bits the container ran: ``sha256:<id>`` or ``<repo>@sha256:<digest>``, as provenance and
    # the cache record it on every backend, whatever runtime the node has.
    image_id: str | None = Field(default=None, alias="imageID")

    @field_validator("image_id")
    @classmethod
    def _content_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _RUNTIME_SCHEME.sub("", value, count=1) or None


class PodStatus(_K8s):
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    start_time: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)
    init_container_statuses: list[ContainerStatus] = Field(default_factory=list)
    container_statuses: list[ContainerStatus] = Field(default_factory=list)


class PodSpec(_K8s):
    node_name: str | None = None


class Pod(_K8s):
    metadata: Meta
    spec: PodSpec = PodSpec()
    status: PodStatus = PodStatus()

    def container(self, name: str) -> ContainerStatus | None:
        for status in (*self.status.init_container_statuses, *self.status.container_statuses):
            if status.name == name:
                return status
        return None

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.status.conditions if c.type == kind), None)


class JobStatus(_K8s):
    conditions: list[Condition] = Field(default_factory=list)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    active: int | None = None
    failed: int | None = None
    succeeded: int | None = None


class Job(_K8s):
    metadata: Meta
    status: JobStatus = JobStatus()

    def finished(self) -> Condition | None:
        """The Job's Complete or Failed condition, when it has one."""
        return next(
            (c for c in self.status.conditions if c.type in ("Complete", "Failed") and c.status == "True"), None
        )


# A container that cannot start for want of its image: the kubelet's reasons.
IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
# A pod its node lost, evicted or shut down: the engine's end, not the tool's.
NODE_REASONS = frozenset({"Evicted", "NodeLost", "Shutdown", "Terminated", "NodeShutdown", "UnexpectedAdmissionError"})
# A pod that cannot start for a reason of its own spec or the cluster's (a missing Secret, ...).
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


STALE = "the Job has ended; its pod's last state is on its way"


@dataclass(frozen=True)
class Verdict:
    """How an attempt ended (``kind``), or None in ``Progress`` while it goes on."""

    kind: EndKind
    message: str
    exit_code: int | None = None
    container: str | None = None  # whose end it is (stage-in, tool, stage-out), when one's


@dataclass(frozen=True)
class Progress:
    """An attempt still going: since when the tool runs (None: not yet), and why it waits."""

    tool_started: datetime | None
    waiting_reason: str | None


def verdict(job: Job | None, pod: Pod | None, *, pod_seen: bool) -> Verdict | Progress:
    """The end of an attempt from its Job and its pod (None: gone, or not made yet; ``pod_seen``: a pod
    of this Job existed before)."""
    finished = job.finished() if job is not None else None
    if finished is not None and finished.reason == "DeadlineExceeded":
        return Verdict(EndKind.TIMED_OUT, "the Job's activeDeadlineSeconds passed (DeadlineExceeded)")
    if job is None:
        return Verdict(EndKind.NODE_LOST, "the Job was deleted from outside MAO (kubectl delete job?)")
    if pod is None:
        if finished is not None and finished.type == "Complete":
            return Verdict(EndKind.COMPLETED, "", exit_code=0, container=TOOL)
        if pod_seen:
            return Verdict(
                EndKind.NODE_LOST,
                "the pod was deleted from outside MAO (evicted through the API, drained, or its node lost)",
            )
        if finished is not None:
            return Verdict(EndKind.LOST, f"the Job ended without a pod: {finished.reason}: {finished.message or ''}".strip())
        return Progress(None, "no pod yet")
    status = pod.status
    if pod.metadata.deletion_timestamp is not None:
        # Going away: what its containers say now is the deletion's doing (SIGTERM); once it is gone,
        # the Job says whether that was its deadline or someone else.
        return Progress(None, "being deleted")
    if status.reason in NODE_REASONS:
        return Verdict(EndKind.NODE_LOST, f"the pod was {status.reason}: {status.message or 'no message'}")
    if status.reason == "DeadlineExceeded":
        return Verdict(EndKind.TIMED_OUT, "the pod's deadline passed (DeadlineExceeded)")
    for name in (STAGE_IN, TOOL, STAGE_OUT):
        container = pod.container(name)
        waiting = container.state.waiting if container is not None else None
        if waiting is not None and waiting.reason in IMAGE_REASONS:
            what = "the staging image" if name != TOOL else "the tool's image"
            return Verdict(
                EndKind.IMAGE_UNAVAILABLE,
                f"{what} cannot be pulled ({waiting.reason}): {waiting.message or 'no message'}",
                container=name,
            )
        if waiting is not None and waiting.reason in CONFIG_REASONS:
            return Verdict(
                EndKind.LOST, f"container {name} cannot start ({waiting.reason}): {waiting.message or ''}", container=name
            )
    stage_in = pod.container(STAGE_IN)
    ended_in = stage_in.state.terminated if stage_in is not None else None
    if ended_in is not None and ended_in.exit_code != 0:
        return Verdict(
            EndKind.LOST,
            f"the stage-in failed (exit {ended_in.exit_code}): the input did not reach the pod",
            container=STAGE_IN,
        )
    tool = pod.container(TOOL)
    ended = tool.state.terminated if tool is not None else None
    if ended is not None and ended.exit_code != 0:
        if ended.reason == "OOMKilled":
            return Verdict(
                EndKind.OOM_KILLED,
                "killed by the kernel: out of memory (the step's memory limit)",
                exit_code=ended.exit_code,
                container=TOOL,
            )
        return Verdict(EndKind.FAILED, f"the tool exited {ended.exit_code}", exit_code=ended.exit_code, container=TOOL)
    if ended is not None:
        stage_out = pod.container(STAGE_OUT)
        out = stage_out.state.terminated if stage_out is not None else None
        if out is not None and out.exit_code == 0:
            return Verdict(EndKind.COMPLETED, "", exit_code=0, container=TOOL)
        if out is not None:
            return Verdict(
                EndKind.LOST,
                f"the tool exited 0 but the stage-out failed (exit {out.exit_code}): its output did not arrive",
                exit_code=0,
                container=STAGE_OUT,
            )
    if status.phase in ("Failed", "Succeeded"):
        reason = status.reason or (finished.reason if finished else None) or status.phase
        return Verdict(EndKind.LOST, f"the pod ended {reason}: {status.message or 'no message'}")
    if finished is not None:
        # The Job's and the pod's news come on two streams: the pod's last state is on its way.
        return Progress(None, STALE)
    started = None
    if tool is not None:
        started = (tool.state.running.started_at if tool.state.running else None) or (
            ended.started_at if ended else None
        )
    scheduled = pod.condition("PodScheduled")
    why: str | None = None
    if scheduled is not None and scheduled.status != "True":
        why = f"{scheduled.reason or 'not scheduled'}: {scheduled.message or ''}".strip()
    elif tool is not None and tool.state.waiting is not None:
        why = tool.state.waiting.reason
    return Progress(started, why)


def end_of(
    kind: EndKind, message: str, job: Job | None, pod: Pod | None, *, exit_code: int | None, log_tail: str
) -> End:
    """The seam's End of an attempt, with the node, the ids and the tool's times from its objects."""
    tool = pod.container(TOOL) if pod is not None else None
    done = tool.state.terminated if tool is not None else None
    running = tool.state.running if tool is not None else None
    started = (done.started_at if done else None) or (running.started_at if running else None)
    ended = done.finished_at if done else None
    created = job.metadata.creation_timestamp if job is not None else None
    queued = max(0.0, (started - created).total_seconds()) if started and created else None
    run = max(0.0, (ended - started).total_seconds()) if started and ended else None
    return End(
        kind=kind,
        exit_code=exit_code,
        message=message,
        node=pod.spec.node_name if pod is not None else None,
        engine_id=job.metadata.uid if job is not None and job.metadata.uid else None,
        image_id=tool.image_id if tool is not None else None,
        queued_seconds=queued if queued is not None else (0.0 if kind is not EndKind.UNSCHEDULABLE else None),
        run_seconds=run,
        started_at=started,
        ended_at=ended,
        log_tail=log_tail,
    )
