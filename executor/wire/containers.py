"""The wire models of the executor's container API (``/containers``), shared with the orchestrator's
Docker backend (``orchestrator/executors/docker.py``).

Where ``POST /run`` runs a container to its end within one request (and removes it when the client
goes away), a container submitted here lives on its own: ``POST /containers`` creates it (and starts
it when a slot is free) and answers at once; ``GET /containers/{name}/wait`` long-polls until it has
ended and says how; ``GET /containers/{name}/logs?since=N&follow=1`` streams its output from byte N;
``DELETE /containers/{name}`` removes it. Submitting is idempotent by name, and the container
survives the orchestrator (a SIGKILL included), which finds it again by its labels
(``GET /containers``) and adopts it: this is the run engine's seam (orchestrator/executors/seam.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from executor.wire.models import MANAGED_LABEL, MAX_TIMEOUT, ContainerFields

# Set by the executor on every container it created through POST /containers: which executor owns
# it (its MAO_INSTANCE_NAME), and the limits its monitor enforces. Read back from the labels, they
# survive an executor restart.
EXECUTOR_LABEL = "mao.executor"
TIMEOUT_LABEL = "mao.timeout"
START_TIMEOUT_LABEL = "mao.start-timeout"
# The most a wait request is held before it answers "still going".
MAX_HOLD = 300.0


class SubmitRequest(ContainerFields):
    """``POST /containers``. ``name`` is required (the orchestrator's deterministic object name: a
    second submit of the same name answers the container that exists). ``labels`` carry the
    attempt's identity, ``mao.instance`` (the orchestrator's instance) included."""

    name: str  # required here; the base's validator still checks it
    # Seconds the container may wait for a free slot (MAO_EXECUTOR_MAX_PARALLEL) before it is given
    # up as unschedulable; None: as long as it takes.
    start_timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None

    @classmethod
    def reserved_labels(cls) -> frozenset[str]:
        return frozenset({MANAGED_LABEL, EXECUTOR_LABEL, TIMEOUT_LABEL, START_TIMEOUT_LABEL})


class Phase(StrEnum):
    QUEUED = "queued"  # created, waiting for a slot
    RUNNING = "running"
    ENDED = "ended"


class Ending(StrEnum):
    """How a container ended, as the executor can tell from the engine (and its own monitor)."""

    COMPLETED = "completed"  # exit 0
    FAILED = "failed"  # another exit code
    OOM_KILLED = "oom_killed"  # the kernel killed it at its memory limit (State.OOMKilled)
    TIMED_OUT = "timed_out"  # killed at its timeout by the executor
    UNSCHEDULABLE = "unschedulable"  # never started within its start_timeout
    CANCELLED = "cancelled"  # removed on request (DELETE) while it waited or ran


class ContainerState(BaseModel):
    """A submitted container as the executor sees it now (``POST /containers``, ``GET
    /containers``, ``GET /containers/{name}/wait``). A submit that made the container answers
    with what it did, without asking the engine again: its ``created_at`` and ``started_at`` are
    the executor's clock as the create and the start answered; every later answer has the
    engine's own times."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    engine_id: str  # the container id
    phase: Phase
    ending: Ending | None = None  # set once ``phase`` is ended
    exit_code: int | None = None
    image_id: str | None = None
    node: str  # the Docker engine's host
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    queued_seconds: float | None = None
    run_seconds: float | None = None
    message: str = ""
    log_tail: str = ""  # the last lines, when the wait asked for them and it has ended


class ContainerList(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    containers: list[ContainerState]


class Removed(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    removed: bool  # False: there was nothing of that name (already gone)
