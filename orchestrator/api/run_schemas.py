"""What the run routes take and answer, for the OpenAPI document: ``GET /runs`` and the grid's queries,
a run's record (its steps and their attempts), the queue, retries and cancels (``api/runs.py``,
``POST /pipeline/run``'s answers)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from executor.wire.names import name_problem

from ..domain.pipeline import Name, Query, Request, StrictBool
from ..domain.retry import Definition
from ..domain.states import AttemptStatus, RunStatus, StepStatus
from .schemas import Out

# The run engine's states (domain/states.py), so the document and the engine cannot drift apart.
RUN_STATUSES = tuple(s.value for s in RunStatus)
STEP_STATUSES = tuple(s.value for s in StepStatus)
ATTEMPT_STATUSES = tuple(s.value for s in AttemptStatus)


# What started a run: manual, cron, backfill, dataset, retry (a word, so that a new kind needs no change here).
TriggerName = Annotated[
    str, Field(pattern=r"^[a-z][a-z_]{0,15}$", description="manual, cron, backfill, dataset or retry")
]
MAX_GRID_PIPELINES = 100


class RunsQuery(Query):
    pipeline: Name | None = None
    status: RunStatus | None = None
    trigger: TriggerName | None = None
    limit: int = Field(default=50, ge=1, le=1000)

    @field_validator("pipeline", "status", "trigger", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class GridQuery(Query):
    pipelines: str | None = Field(
        default=None,
        max_length=13000,
        description=f"comma-separated pipeline names (at most {MAX_GRID_PIPELINES}); "
        "default: every pipeline defined here or with runs here",
    )
    last: int = Field(default=25, ge=1, le=100, description="runs per pipeline, newest first")
    status: RunStatus | None = None
    trigger: TriggerName | None = None

    @field_validator("pipelines", "status", "trigger", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("pipelines")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [n.strip() for n in value.split(",")]
        for name in names:
            if problem := name_problem(name, "pipeline name"):
                raise ValueError(problem)
        return ",".join(names)

    def names(self) -> list[str] | None:
        return self.pipelines.split(",") if self.pipelines is not None else None


class RunStarted(Out):
    id: str
    run_id: str
    pipeline: str
    status: str


class Attempt(Out):
    attempt: int = Field(description="1, 2, ... within the step (a fan-out step's shards numbered too)")
    tool: str
    image_id: str | None
    status: str = Field(description=", ".join(ATTEMPT_STATUSES))
    exit_code: int | None
    started_at: str | None
    ended_at: str | None
    error: str | None
    shard: int | None = Field(default=None, description="fan-out steps only")
    speculative: bool | None = Field(default=None, description="fan-out steps only")
    backend: str | None = Field(default=None, description="where it ran (MAO_BACKENDS)")
    node: str | None = Field(default=None, description="the machine it ran on, as its backend says")
    queued_seconds: float | None = Field(default=None, description="time it waited to be scheduled")


class RunStep(Out):
    position: int
    name: str
    needs: list[str] = Field(default_factory=list, description="the steps this one waits for")
    tool: str
    image: str | None
    status: str = Field(description=", ".join(STEP_STATUSES))
    exit_code: int | None
    image_id: str | None
    input_dataset: str | None
    input_commit: str | None
    output_dataset: str
    branch: str
    output_commit: str | None
    merge_commit: str | None
    merge: str | None = Field(description="merged, queued or conflict")
    changed: bool | None
    conflicts: list[str]
    started_at: str | None
    ended_at: str | None
    duration: float | None
    error: str | None
    insights: str | None
    reason: str | None = Field(
        default=None,
        description="a retry's step: why it was reused or ran again (failed in the retried run, "
        "downstream of a step that runs again, its output dataset's ground-truth moved since)",
    )
    attempts: list[Attempt] = Field(default_factory=list)
    shards: dict[str, Any] | None = Field(default=None, description="fan-out steps only: the shards' summary")
    log_tail: str | None = Field(default=None, description="last 200 lines, secrets masked (GET /runs/{id})")


class Run(Out):
    id: str
    pipeline: str
    trigger: str
    status: str = Field(description=", ".join(RUN_STATUSES))
    error: str | None
    schedule_id: str | None
    priority: int = Field(default=0, description="admission order: higher first, then older")
    version: int | None = Field(
        default=None,
        description="the pipeline version it ran with (GET /pipeline/{name}/versions/{n}); null while "
        "queued without one asked for (it takes the current one when it starts), and for runs "
        "recorded before versions existed",
    )
    backfill_id: str | None = Field(default=None, description="the backfill it is a tick of")
    retry_of: str | None = Field(
        default=None, description="the run it retries (POST /runs/{id}/retry): its done steps are reused"
    )
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    duration: float | None
    steps: list[RunStep]


class QueueEntry(Out):
    position: int = Field(description="1-based: the order in which queued runs are considered")
    id: str
    pipeline: str
    priority: int
    trigger: str
    queued_at: str
    tick_at: str | None = Field(description="the schedule or backfill tick the run stands for")
    schedule_id: str | None
    retry_of: str | None = Field(default=None, description="the run it retries")
    waiting_for: str = Field(
        description="why it has not started: the instance's limit, or its pipeline's run"
    )


class RetryRequest(Request):
    """``POST /runs/{id}/retry``: no body, or ``{definition?, wait?}``."""

    definition: Definition = Field(
        default=Definition.RECORDED,
        description="recorded: the pipeline version the retried run ran with (default); current: the "
        "pipeline as it is now (a step whose definition changed runs again)",
    )
    wait: StrictBool = Field(
        default=False,
        description="answer once the retry has ended (200 with its record) instead of 202 at once",
    )


class PlannedStep(Out):
    step: str
    action: Literal["reuse", "run"]
    reason: str


class RetryStarted(Out):
    id: str
    run_id: str
    pipeline: str
    status: str = Field(description="pending (it starts now) or queued")
    retry_of: str
    version: int | None = Field(description="the pipeline version it runs")
    definition: Literal["recorded", "current"]
    plan: list[PlannedStep] = Field(
        description="each step: reuse or run, and why; a step planned reuse runs after all (its reason "
        "says so in GET /runs/{id}) when its output dataset's ground-truth moved by the time the retry starts"
    )


class CancelStarted(Out):
    id: str
    status: Literal["cancelling"]
