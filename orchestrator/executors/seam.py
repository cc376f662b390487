"""The seam between the run engine and every engine that runs a step's container: the local Docker
executor, Docker Swarm, Slurm, Kubernetes (docs/backends.md).

The engine says *what* to run (``ContainerSpec``: logical input and output, identity, limits); a
backend says *where and how* (``Backend``). The engine never branches on the backend's kind: what a
backend can and cannot do is in its ``Capabilities``, checked at ``POST /pipeline/init`` by
``validate``, so a step the backend cannot run as asked is a 400 there, never a weaker run.

Contracts every backend keeps (the contract suite in tests/ checks each one):
- ``submit`` is idempotent: the object's name is ``Identity.object_name()``, so submitting the same
  identity twice (a retry of the submission, a restart mid-submission) never starts a second object.
- Engine-level restarts are off: MAO retries, in one place (the run engine).
- Every object carries the identity as its name and as labels (``Identity.labels()``), so that
  ``list_managed`` finds it after an orchestrator restart (adopt, never submit twice) and the sweep
  removes objects of ended or unknown runs.
- ``cancel`` is safe to repeat and returns once the engine holds nothing of the object any more.
- ``wait`` returns a typed ``End`` for every way an attempt can end; it never raises for the tool's
  failure. It raises ``BackendUnavailable`` only when the engine cannot be asked (then the engine asks
  again: the object is still there, or it is ``lost``).
- No git and no credential reaches a node or a container: the instance stays the only writer of its
  datasets' history. The tool container never sees a staging token.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import Unavailable

# Labels every object of every backend carries (Docker/Swarm labels, Kubernetes labels, Slurm comment).
MANAGED_LABEL = "mao.managed"
INSTANCE_LABEL = "mao.instance"
RUN_LABEL = "mao.run"
STEP_LABEL = "mao.step"
ATTEMPT_LABEL = "mao.attempt"
SHARD_LABEL = "mao.shard"
# Where tools find their data, on every backend: tool images need no configuration.
OUTPUT_MOUNT = "/usr/src/app/data"
INPUT_MOUNT = "/usr/src/app/input"


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Identity(_Value):
    """Whose attempt this is. Deterministic: the same attempt always has the same object name."""

    instance: str
    pipeline: str
    run: str
    step: str
    position: int = Field(ge=0)  # the step's index in its pipeline (names stay short)
    attempt: int = Field(ge=1)
    shard: int | None = Field(default=None, ge=0)

    def object_name(self) -> str:
        """A name every engine accepts (a DNS-1123 label: lowercase, digits and '-', at most 63
        characters: Kubernetes, Swarm services, Slurm job names), unique per instance and attempt.
        The instance is hashed: instance names may hold upper case, '.' and '_'."""
        instance = hashlib.sha256(self.instance.encode()).hexdigest()[:8]
        run = "".join(c for c in self.run.lower() if c.isalnum())[:12]
        shard = "" if self.shard is None else f"-s{self.shard}"
        return f"mao-{instance}-{run}-{self.position}-{self.attempt}{shard}"

    def labels(self) -> dict[str, str]:
        labels = {
            MANAGED_LABEL: "true",
            INSTANCE_LABEL: self.instance,
            RUN_LABEL: self.run,
            STEP_LABEL: self.step,
            ATTEMPT_LABEL: str(self.attempt),
        }
        if self.shard is not None:
            labels[SHARD_LABEL] = str(self.shard)
        return labels


class DataMode(StrEnum):
    """How a step's input and output reach a container and come back."""

    LOCAL = "local"  # the engine runs on this host: bind the orchestrator's own folders (host paths)
    SHARED = "shared"  # a folder mounted at the same path on this host and every node (NFS, scratch)
    FETCH = "fetch"  # the container side fetches an input tarball and uploads its output over HTTP


class InputData(_Value):
    """A read-only snapshot of the input dataset's ground-truth at ``commit``, exported by the
    orchestrator into ``folder`` (a folder on the orchestrator's host); mounted read-only at
    ``INPUT_MOUNT``."""

    commit: str
    folder: Path


class OutputData(_Value):
    """The work folder the tool writes (``OUTPUT_MOUNT``), on the orchestrator's host. It starts with
    the node branch's content; after the end the orchestrator checks and commits what is in it (for a
    backend that stages elsewhere: after the backend has brought it back here)."""

    folder: Path


class Limits(_Value):
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None
    gpus: int = Field(default=0, ge=0, le=64)
    log_bytes: int | None = None  # of the container's output the engine keeps (bounded disk)
    tmp_bytes: int | None = None  # the /tmp a read-only root gets (a tmpfs: it counts as memory)


class ContainerSpec(_Value):
    """One attempt (or one shard attempt) of one step, as the engine asks for it."""

    identity: Identity
    image: str  # as registered
    image_id: str | None = None  # resolve_image(image): the same bits on every node; the cache's key
    cmd: list[str] | None = None  # None: the image's default command
    env: dict[str, str] = Field(default_factory=dict)  # private values included: the tool needs them
    secrets: frozenset[str] = frozenset()  # keys of env whose values are masked wherever output goes
    input: InputData | None = None
    output: OutputData
    user: tuple[int, int]  # uid, gid: never 0 (checked by every backend)
    limits: Limits = Limits()
    timeout: float = Field(gt=0)  # seconds of run time (not queue time)
    start_timeout: float | None = Field(default=None, gt=0)  # seconds waiting to be scheduled
    stall_timeout: float | None = Field(default=None, gt=0)  # seconds without output
    placement: dict[str, str] = Field(default_factory=dict)  # node labels the engine must match
    docker_socket: bool = False
    # The step's choice (``writable_root``): its image's file system writable, unbounded; by default
    # it is read-only and the tool writes only its output folder and /tmp (``limits.tmp_bytes``).
    writable_root: bool = False
    labels: dict[str, str] = Field(default_factory=dict)  # extra labels (never the identity's keys)

    @property
    def name(self) -> str:
        return self.identity.object_name()

    def all_labels(self) -> dict[str, str]:
        return {**self.labels, **self.identity.labels()}


class Handle(_Value):
    """What the engine needs to find a submitted object again, after a restart too: stored with the
    attempt (``backend``, ``name``, ``engine_id``)."""

    backend: str  # the backend's configured name (MAO_BACKENDS), not its kind
    name: str  # Identity.object_name()
    engine_id: str | None = None  # the engine's own id (container id, service id, Slurm job id, Job uid)


class EndKind(StrEnum):
    COMPLETED = "completed"  # exit 0
    FAILED = "failed"  # non-zero exit: the tool's failure
    OOM_KILLED = "oom_killed"
    TIMED_OUT = "timed_out"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    NODE_LOST = "node_lost"  # the node died, was drained, or the object was removed from outside
    IMAGE_UNAVAILABLE = "image_unavailable"  # the node could not get the image
    UNSCHEDULABLE = "unschedulable"  # not started within start_timeout (no node matches, no capacity)
    LOST = "lost"  # the engine no longer knows the object and cannot say how it ended


# Ends a retry can cure without the tool changing: the engine's, not the tool's.
ENGINE_ENDS = frozenset(
    {EndKind.NODE_LOST, EndKind.IMAGE_UNAVAILABLE, EndKind.UNSCHEDULABLE, EndKind.LOST}
)


class End(_Value):
    kind: EndKind
    exit_code: int | None = None  # None when it did not exit on its own
    message: str = ""  # one sentence for the run record (never a secret)
    node: str | None = None
    engine_id: str | None = None
    image_id: str | None = None
    queued_seconds: float | None = None
    run_seconds: float | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    log_tail: str = ""  # the last lines (the full log: Backend.logs)

    @property
    def retryable(self) -> bool:
        """The same attempt again may pass: every end but success and cancel (a non-zero exit,
        timeout, stall and OOM are the tool's, retried within the step's ``retries``)."""
        return self.kind not in (EndKind.COMPLETED, EndKind.CANCELLED)


class Capabilities(_Value):
    kind: str  # docker | swarm | slurm | kubernetes
    data_modes: frozenset[DataMode]
    # What the backend enforces itself: memory, cpus, pids, gpus, no_new_privileges, read_only_root,
    # docker_socket, placement, start_timeout. A step asking for one it lacks is refused at init.
    enforces: frozenset[str]
    log_follow: bool = True
    gpus: int | None = None  # GPUs the engine reports, None when it does not say
    max_parallel: int | None = None  # objects at once, None when the engine decides
    notes: tuple[str, ...] = ()  # what the cluster operator must enforce (shown in GET /backends)


class Health(_Value):
    ok: bool
    message: str  # "ok" or what is wrong and what to do
    details: dict[str, str] = Field(default_factory=dict)


class Managed(_Value):
    """An object ``list_managed`` found: its handle, whose it is (from its labels) and whether it runs."""

    handle: Handle
    labels: dict[str, str]
    running: bool


class BackendRejected(Exception):
    """The backend cannot run this spec as asked (``field`` names the step field): a 400 at init
    (``code``: ``step_rejected``, or ``step_too_large`` for a spec over the backend's size limit)."""

    def __init__(self, backend: str, field: str, message: str, code: str = "step_rejected") -> None:
        super().__init__(message)
        self.backend = backend
        self.field = field
        self.message = message
        self.code = code


class BackendUnavailable(Unavailable):
    """The engine cannot be asked now (its API does not answer, or fails): the object, if any, is
    still there; ask again (the run engine does, with backoff)."""

    code = "backend_unavailable"


class SubmitEnded(Exception):
    """``submit`` could not create the object for a reason that is one of the typed ends (for example
    ``image_unavailable``: the engine has no such image and cannot get it): the attempt ends with
    ``end``, as if ``wait`` had returned it."""

    def __init__(self, end: End) -> None:
        super().__init__(end.message)
        self.end = end


@runtime_checkable
class Backend(Protocol):
    """One engine that runs containers. ``name`` is the operator's (``MAO_BACKENDS``)."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def capabilities(self) -> Capabilities: ...

    async def health(self) -> Health: ...

    async def resolve_image(self, image: str) -> str | None:
        """An id of ``image`` that is the same on every node (an image id or registry digest), or
        None when the engine cannot get it."""

    async def validate(self, spec: ContainerSpec) -> None:
        """Raise BackendRejected when this backend cannot run ``spec`` exactly as asked."""

    async def submit(self, spec: ContainerSpec) -> Handle:
        """Create the object (idempotent by ``spec.name``) and return at once; never waits for it."""

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        """Return when the object has ended, with how. Enforces ``spec.start_timeout`` (the object is
        cancelled and the end is ``unschedulable``) and ``spec.timeout`` counted from the object's
        start (cancelled, ``timed_out``). Stall detection is the engine's (it reads ``logs``)."""

    def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        """The object's output from byte ``since`` on; with ``follow``, until the object ended. A
        caller whose stream dropped asks again with ``since`` = the bytes it has: nothing lost or
        doubled. A stream that ends normally has sent everything; one that breaks off raises
        BackendUnavailable. With ``follow``, an empty chunk comes first once the object has
        started (at once if it already had): the engine's stall clock starts there, so time
        waiting to be scheduled never counts as silence."""

    async def cancel(self, handle: Handle) -> None:
        """Stop and remove the object and everything it left on the engine; safe to repeat."""

    async def list_managed(self, instance: str) -> list[Managed]:
        """Every object of ``instance`` the engine holds (running or ended but not removed)."""


def secret_values(spec: ContainerSpec) -> Mapping[str, str]:
    """The private values of ``spec``, for masking its output."""
    return {key: spec.env[key] for key in spec.secrets if key in spec.env}
