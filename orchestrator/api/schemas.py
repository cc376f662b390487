"""Request models the handlers parse with that belong to no service, and the shapes of the answers,
for the OpenAPI document (``openapi.py``): the common ones (``Out``, ``Error``), registries, pipelines,
the gateway and the federation's members; runs' in ``run_schemas``, schedules' in ``schedule_schemas``.

Answers are built by the services as dicts; these models describe them (``extra="allow"``: a field a
newer engine adds is not a contract break). Requests are validated with the models here or in
``orchestrator.request_models`` and ``orchestrator.scheduling.requests``, all strict (``Request``: an unknown
field is a 400 naming it); query parameters with ``Query`` models, which ignore unknown parameters.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from ..domain.pipeline import Name, Request


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
    enforces: list[str] = Field(
        description="limits and fields it enforces itself; a step asking for another is a 400"
    )
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

    force: Name | None = Field(
        default=None, description="one of the step's tools: runs start with it until a reset"
    )
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
        default=None,
        description="each step with a strategy: its watcher's state (absent when no step has one)",
    )


class BareRepo(Out):
    name: str
    path: str
    created: bool


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
