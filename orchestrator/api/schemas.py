"""Request models the handlers parse with that belong to no service, and the shapes of the answers,
for the OpenAPI document (``openapi.py``).

Answers are built by the services as dicts; these models describe them (``extra="allow"``: a field a
newer engine adds is not a contract break). Requests are validated with the models here or in
``orchestrator.request_models`` and ``orchestrator.scheduling.requests``, all strict (``Request``: an unknown
field is a 400 naming it); query parameters with ``Query`` models, which ignore unknown parameters.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from executor.wire.names import name_problem

from ..domain.pipeline import Name, Query, Request, StrictBool
from ..domain.retry import Definition
from ..domain.states import AttemptStatus, RunStatus, StepStatus

# The run engine's states (domain/states.py), so the document and the engine cannot drift apart.
RUN_STATUSES = tuple(s.value for s in RunStatus)
STEP_STATUSES = tuple(s.value for s in StepStatus)
ATTEMPT_STATUSES = tuple(s.value for s in AttemptStatus)


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Error(Out):
    error: str = Field(description="a stable code, e.g. invalid_name, not_found, etcd_unavailable")
    message: str = Field(description="what happened and what to do")


# -- requests ---------------------------------------------------------------------------------------


class BareRepoRequest(Request):
    name: Name


class WriteRequest(Request):
    key: Any = Field(description="raw/<path> (checked by the gateway: invalid_key otherwise)")
    value: Any = Field(description="any JSON value, at most 64 KiB encoded")


class KeyRequest(Request):
    key: Any = Field(description="raw/<path> or insights/<path> (a prefix for /inspect)")


class NewEtcdMember(Request):
    name: Any = Field(description="the new member's name")
    peer_url: Any = Field(description="its peer URL, http://host:2380")


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


class SchedulesQuery(Query):
    ticks: int = Field(default=20, ge=0, le=1000, description="recent ticks per schedule, newest first")
    next: int = Field(default=0, ge=0, le=20, description="upcoming ticks per cron schedule (next_ticks)")


class FederationSchedulesQuery(Query):
    next: int = Field(default=0, ge=0, le=20, description="upcoming ticks per cron schedule (next_ticks)")


# -- answers ----------------------------------------------------------------------------------------
class Greeting(Out):
    message: str
    instance: str
    version: str


class BackendHealth(Out):
    kind: str
    ok: bool
    message: str = Field(description="ok, or what is wrong and what to do")
    details: dict[str, str] | None = None


class Health(Out):
    status: Literal["ok", "degraded"]
    instance: str
    etcd: str
    database: str
    executor: str = Field(description="the first docker backend's health (as before backends existed)")
    backends: dict[str, BackendHealth] = Field(default_factory=dict, description="every backend, by name")
    # MAO_API_LEGACY_OPEN=1: the API answers without a token.
    warnings: list[str] | None = None


class BackendCapabilities(Out):
    kind: str
    data_modes: list[str]
    enforces: list[str] = Field(description="limits and fields it enforces itself; a step asking for another is a 400")
    log_follow: bool
    gpus: int | None = Field(
        description="the most GPUs one node gives a step (a step's gpus field); null: the engine does not say"
    )
    max_parallel: int | None
    notes: list[str]


class BackendInfo(Out):
    name: str
    kind: str
    default: bool = Field(description="steps without a backend field run here (MAO_DEFAULT_BACKEND)")
    capabilities: BackendCapabilities
    health: BackendHealth
    running: int = Field(description="attempts of this instance whose objects run there now")


class Ownership(Out):
    kind: str
    name: str
    owner: str | None
    revision: int
    signed_by: str | None
    signed_at: str | None
    proof: Literal["signature", "claim", "none"]


class Change(Out):
    kind: str
    name: str
    what: str = Field(description="image, master, owner, or registration (gone, or no longer valid)")
    pinned: str | None
    current: str | None


class PipelinePins(Out):
    name: str
    pins: list[dict[str, Any]]
    changes: list[Change]


class Accepted(Out):
    name: str
    dry_run: bool
    accepted: list[Change]
    changes: list[Change]


class RegistrationAccepted(Out):
    kind: str
    name: str
    dry_run: bool
    scopes: dict[str, list[Change]] = Field(
        description="each pipeline (or :raw, the gateway's raw listener) that had pinned it, and the "
        "differences accepted there"
    )


class Deleted(Out):
    name: str
    deleted: bool


class InitResult(Out):
    name: str
    steps: list[dict[str, Any]]
    ok: bool
    version: int = Field(description="the pipeline's version after this init (GET /pipeline/{name}/versions)")
    new_version: bool = Field(description="true when this init recorded it (the definition changed)")
    hash: str = Field(description="SHA-256 of the canonical definition")


class ToolHealth(Out):
    tool: str
    healthy: bool
    consecutive_failures: int
    abandoned_at: str | None = Field(description="since when runs no longer start with it (null: healthy)")
    probed_at: str | None = Field(description="the last run that tried it again while abandoned")


class StepStrategy(Out):
    active: str = Field(description="the tool the step's runs start with")
    since: str
    reason: str
    forced: str | None = Field(description="a tool an operator forced (null: the watcher decides)")
    tools: list[ToolHealth]


class StrategySteered(StepStrategy):
    pipeline: str
    step: str


class StrategyRequest(Request):
    """``POST /pipeline/{name}/strategy/{step}``: ``{"force": tool}`` or ``{"reset": true}``."""

    force: Name | None = Field(default=None, description="one of the step's tools: runs start with it until a reset")
    reset: Annotated[bool, Strict()] = Field(
        default=False, description="forget the watcher's counts: every tool healthy, the main active"
    )

    @model_validator(mode="after")
    def _one(self) -> StrategyRequest:
        if (self.force is not None) == self.reset:
            raise ValueError('give either {"force": tool} or {"reset": true}')
        return self


class PublicPipeline(Out):
    name: str
    description: str
    steps: list[dict[str, Any]]
    version: int | None = Field(default=None, description="its current version")
    strategies: dict[str, StepStrategy] | None = Field(
        default=None, description="each step with a strategy: its watcher's state (absent when no step has one)"
    )


class RunStarted(Out):
    id: str
    run_id: str
    pipeline: str
    status: str


class Scheduled(Out):
    pipeline: str
    job_id: str
    cron: str
    timezone: str
    scope: str
    placement: dict[str, Any] | None = None
    overlap: str | None = Field(default=None, description="skip, replace (instance scope) or allow")
    catchup: str | None = Field(default=None, description="none, latest or all")
    catchup_window: int | None = None
    priority: int | None = Field(default=None, description="the place of its runs in the winning instance's queue")


class BareRepo(Out):
    name: str
    path: str
    created: bool


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
    waiting_for: str = Field(description="why it has not started: the instance's limit, or its pipeline's run")


class RetryRequest(Request):
    """``POST /runs/{id}/retry``: no body, or ``{definition?, wait?}``."""

    definition: Definition = Field(
        default=Definition.RECORDED,
        description="recorded: the pipeline version the retried run ran with (default); current: the "
        "pipeline as it is now (a step whose definition changed runs again)",
    )
    wait: StrictBool = Field(
        default=False, description="answer once the retry has ended (200 with its record) instead of 202 at once"
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


class Tick(Out):
    due_at: str | None
    outcome: str = Field(description="fired, skipped (or claimed while undecided)")
    run_id: str | None
    reason: str | None


class Schedule(Out):
    id: str
    pipeline: str
    cron: str
    timezone: str
    overlap: str = Field(default="skip", description="skip, replace or queue")
    priority: int = Field(default=0, description="the priority of the runs it starts")
    created_at: str | None
    last_tick_at: str | None
    next_run_time: str | None
    next_ticks: list[str] | None = Field(default=None, description="with ?next=N: the next N ticks")
    ticks: list[Tick]


class FederationSchedule(Out):
    id: str
    pipeline: str
    cron: str
    timezone: str
    placement: dict[str, Any] | None
    priority: int = Field(default=0, description="the place of its runs in the winning instance's queue")
    created_by: str | None
    created_at: str | None
    next_run_time: str | None
    next_ticks: list[str] | None = Field(default=None, description="with ?next=N: the next N ticks")
    ticks: list[Tick]


class JobDeleted(Out):
    job_id: str
    deleted: bool
    scope: str


class Members(Out):
    instances: list[dict[str, Any]]
    etcd: list[dict[str, Any]]


class Lock(Out):
    key: str
    dataset: str | None
    instance: str | None
    purpose: str | None
    acquired_at: str | None


class GatewayKey(Out):
    name: str
    key: str | None = Field(default=None, description="shown once, at creation")
    created_at: str | None = None


class Revoked(Out):
    name: str
    revoked: bool


JsonObject = dict[str, Any]
