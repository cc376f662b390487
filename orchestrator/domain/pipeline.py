"""What the registries hold: tools, datasets, pipelines and their steps, and the field types they share
with the request models.

These models parse what this instance reads back (etcd, its database), which may carry fields a newer
version or another instance wrote (a pipeline registration's ``instances``): they ignore unknown
fields (``Model``). What clients send is parsed by the strict request models in
``orchestrator.request_models`` (``Request``: an unknown field is a 400 naming it), which reuse the
fields and validators defined here, so the two cannot drift apart. A step is strict in both: this
instance is the only writer of the steps it stores.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from executor.wire.models import MAX_CPUS, MIN_CPUS, MIN_MEMORY
from executor.wire.names import check_name

from .fanout import FanOut
from .graph import GraphError, StepNode, resolve
from .masters import check_master, credentials_problem
from .sizes import parse_size

# A step env value of exactly this marks a secret that each instance supplies itself (``private_env``).
PRIVATE_PLACEHOLDER = "{{ MAO_PRIVATE_VARIABLE }}"
MAX_STEPS = 50

_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$")

Name = Annotated[str, AfterValidator(check_name)]
Text = Annotated[str, Field(max_length=4000)]


def _scalar_to_str(value: Any) -> Any:
    # Old pipeline files write numbers and booleans in env; containers only take strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _no_nul(value: str) -> str:
    # The kernel and the Docker engine cut strings at NUL: the executor refuses them, so init does too.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _size(value: Any) -> Any:
    # Bytes, or a size with a unit ("512m"); stored and sent as bytes.
    return parse_size(value) if isinstance(value, str) else value


def _memory(size: int) -> int:
    # The executor refuses less than 6 MiB (the Docker engine's minimum).
    if not MIN_MEMORY <= size <= 2**50:
        raise ValueError("must be between 6 MiB and 1 PiB (bytes, or a size such as '512m')")
    return size


EnvValue = Annotated[str, BeforeValidator(_scalar_to_str), Field(max_length=65536), AfterValidator(_no_nul)]
# Strict where the prototype only ever sent the right JSON type: "yes" is not true and "60" is not 60.
StrictBool = Annotated[bool, Strict()]
Memory = Annotated[int, Strict(), BeforeValidator(_size), AfterValidator(_memory)]


class Model(BaseModel):
    """What this instance reads back (etcd, SQL): unknown fields are ignored, not errors."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


# What a client sends: a misspelt field must not silently become a default, so it is a 400 naming it.
REQUEST_CONFIG = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Request(BaseModel):
    """A request body (``common.parse``): unknown fields are a 400 naming them."""

    model_config = REQUEST_CONFIG


class Query(BaseModel):
    """Query parameters (``common.parse`` over ``request.query``). Unknown parameters are ignored on
    every route, a decision: they filter reads and write nothing, and proxies, caches and browsers add
    their own (``?_=<time>``)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


def check_image(value: str) -> str:
    if not _IMAGE_RE.fullmatch(value):
        raise ValueError(f"invalid image reference {value!r}")
    return value


class Tool(Model):
    name: Name
    image: Annotated[str, AfterValidator(check_image)]
    author: Text = ""
    data_repo: Text = ""
    code_repo: Text = ""
    artefact: Text = ""
    description: Text = ""

    @field_validator("author", "data_repo", "code_repo", "artefact", "description", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        # The prototype's maoctl sends null for every flag not given.
        return "" if value is None else value


def _check_master(value: str) -> str:
    if problem := check_master(value) or credentials_problem(value):
        raise ValueError(problem)
    return value


Master = Annotated[str, Field(max_length=2000), AfterValidator(_check_master)]
Nodes = Annotated[list[Name], Field(max_length=1000)]


class Dataset(Model):
    """A dataset as etcd holds it (``{master, nodes}`` under its name). Requests: ``DatasetRequest``."""

    name: Name
    master: Master
    nodes: Nodes = Field(default_factory=list)


def check_env(env: dict[str, str] | None) -> dict[str, str] | None:
    for key in env or {}:
        if not _ENV_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid environment variable name {key!r}")
    return env


MAX_RETRIES = 20
MAX_GPUS = 64
MAX_DELAY = 24 * 3600.0


def _empty_cmd_is_default(value: Any) -> Any:
    # The prototype sends ``cmd: []`` for "the image's own command", exactly as null.
    return None if value == [] else value


def _placement_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid node label {key!r}: letters, digits, '.', '_', '/' and '-', at most 253")
        if len(value) > 253 or "\x00" in value or any(c.isspace() for c in value):
            raise ValueError(f"invalid value for node label {key!r}: at most 253 characters, no whitespace")
    return labels


class Placement(Model):
    """The ``placement`` step field: node labels the backend must match (a backend that cannot place
    steps refuses it at init, docs/backends.md)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    labels: Annotated[dict[str, str], Field(min_length=1, max_length=32), AfterValidator(_placement_labels)]


MAX_REPLACEMENTS = 10


class Strategy(Model):
    """The ``strategy`` step field: the main tool, its replacements in order, and the watcher's
    rules (domain/strategy.py, docs/strategies.md). ``fallback_tool`` is the one-replacement form
    without a watcher."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, str_strip_whitespace=True)

    main: Name
    replacements: Annotated[list[Name], Field(min_length=1, max_length=MAX_REPLACEMENTS)]
    # Consecutive runs of the step in which a tool failed (or degraded) before runs stop starting with it.
    open_after: Annotated[int, Field(ge=1, le=1000)] = 3
    # Seconds between two runs that try an abandoned tool again.
    probe_every: Annotated[float, Field(gt=0, le=30 * 86400)] = 300.0

    @model_validator(mode="after")
    def _distinct(self) -> Strategy:
        chain = [self.main, *self.replacements]
        if len(set(chain)) != len(chain):
            raise ValueError("strategy: main and replacements must be distinct tools")
        return self


class Degraded(Model):
    """The ``degraded_when`` step field: a tool whose run succeeds but that is slower than
    ``duration_over`` seconds, or whose ``insights.json`` number ``insight`` is below ``below`` (or
    absent), counts as failing for the strategy's watcher (its output is still used)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, str_strip_whitespace=True)

    duration_over: Annotated[float, Field(gt=0, le=7 * 86400)] | None = None
    insight: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Degraded:
        by_insight = self.insight is not None or self.below is not None
        if by_insight and (self.insight is None or self.below is None):
            raise ValueError("degraded_when: insight and below go together")
        if by_insight == (self.duration_over is not None):
            raise ValueError("degraded_when: give either duration_over or insight with below")
        return self


class Step(Model):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name
    tool: Name
    output_dataset: Name
    input_dataset: Name | None = None
    env: Annotated[dict[str, EnvValue] | None, AfterValidator(check_env)] = None
    cmd: Annotated[
        Annotated[
            list[Annotated[str, Strict(), Field(max_length=65536), AfterValidator(_no_nul)]],
            Field(max_length=1000),
        ]
        | None,
        BeforeValidator(_empty_cmd_is_default),
    ] = None
    docker_socket: StrictBool = False
    timeout: Annotated[float, Strict(), Field(gt=0, le=7 * 86400)] | None = None
    # Resource limits; unset means the instance's MAO_STEP_MEMORY / MAO_STEP_CPUS.
    memory: Memory | None = None
    # The executor's bounds (the engine refuses less than 0.01 CPU): a step that could never start
    # is refused at init, not at each run.
    cpus: Annotated[float, Strict(), Field(ge=MIN_CPUS, le=MAX_CPUS)] | None = None
    # Write-only: values of this instance's private variables. Kept in the local database only, and
    # out of every repr (a Pipeline, a run, a carried definition in a log line or a traceback).
    private_env: Annotated[dict[str, EnvValue] | None, AfterValidator(check_env), Field(repr=False)] = None
    # The run engine (orchestrator/runs): absent = the previous step; [] = a root.
    needs: list[Name] | None = Field(default=None, max_length=MAX_STEPS)
    retries: Annotated[int, Strict(), Field(ge=0, le=MAX_RETRIES)] = 0
    retry_delay: Annotated[float, Strict(), Field(ge=0, le=MAX_DELAY)] = 5.0
    stall_timeout: Annotated[float, Strict(), Field(gt=0, le=7 * 86400)] | None = None
    fallback_tool: Name | None = None
    cache: StrictBool = False
    # One container per shard of the input files (orchestrator/runs/fanout/, docs/fan-out.md).
    fan_out: FanOut | None = None
    # A pool of MAO_POOLS: the step holds one of its slots while it runs (runs/admission.py).
    pool: Name | None = None
    # The tool's root file system is read-only (it writes its output folder and a bounded /tmp);
    # true lets it write anywhere in its container, unbounded (docs/security.md#tools).
    writable_root: StrictBool = False
    # Where it runs (docs/backends.md): a backend of MAO_BACKENDS (None: MAO_DEFAULT_BACKEND), how
    # long it may wait to be scheduled there (None: the backend's default), and on which nodes.
    backend: Name | None = None
    start_timeout: Annotated[float, Strict(), Field(gt=0, le=7 * 86400)] | None = None
    placement: Placement | None = None
    # GPUs the tool gets (docs/backends.md#gpus); a backend that offers fewer refuses the step at init.
    gpus: Annotated[int, Strict(), Field(ge=0, le=MAX_GPUS)] = 0
    # A main tool with ordered replacements and a watcher (domain/strategy.py); ``tool`` is its main.
    strategy: Strategy | None = None
    degraded_when: Degraded | None = None

    @model_validator(mode="before")
    @classmethod
    def _tool_from_strategy(cls, data: Any) -> Any:
        # A step with a strategy may leave out ``tool``: it is the strategy's main.
        if isinstance(data, dict) and data.get("tool") is None and isinstance(data.get("strategy"), dict):
            main = data["strategy"].get("main")
            if isinstance(main, str):
                return {**data, "tool": main}
        return data

    @model_validator(mode="after")
    def _one_strategy(self) -> Step:
        if self.strategy is not None:
            if self.strategy.main != self.tool:
                raise ValueError(f"step {self.name}: strategy.main must be the step's tool ({self.tool})")
            if self.fallback_tool is not None:
                raise ValueError(
                    f"step {self.name}: give either fallback_tool or strategy (its replacements), not both"
                )
            if self.fan_out is not None:
                raise ValueError(f"step {self.name}: a fan-out step takes fallback_tool, not a strategy")
        elif self.degraded_when is not None:
            raise ValueError(f"step {self.name}: degraded_when needs a strategy (it informs its watcher)")
        return self

    @field_validator("input_dataset", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _fan_out_needs_input(self) -> Step:
        if self.fan_out is not None and not self.input_dataset:
            raise ValueError(
                f"step {self.name}: fan_out needs an input_dataset (its shards are slices of the input files)"
            )
        return self

    def private_keys(self) -> list[str]:
        return [k for k, v in (self.env or {}).items() if v == PRIVATE_PLACEHOLDER]

    def public(self) -> dict[str, Any]:
        """The step as other instances and API clients may see it: no secret values. Unset limits are
        left out, so registrations made before those fields existed still compare equal."""
        data = self.model_dump(exclude={"private_env"})
        for key in ("memory", "cpus", "pool", "backend", "start_timeout", "placement", "strategy", "degraded_when"):
            if data.get(key) is None:
                data.pop(key, None)
        for key in ("writable_root", "gpus"):
            if not data.get(key):
                data.pop(key, None)
        return data

    def tools(self) -> list[str]:
        """The step's tools in the order a run may try them: its main, then its replacements."""
        if self.strategy is not None:
            return [self.tool, *self.strategy.replacements]
        return [self.tool, *([self.fallback_tool] if self.fallback_tool else [])]


class Pipeline(Model):
    name: Name
    description: Text = ""
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    # Bounds the whole run (every step, retry and wait); None: no bound beyond each step's timeout.
    run_timeout: float | None = Field(default=None, gt=0, le=30 * 86400)

    @model_validator(mode="after")
    def _graph(self) -> Pipeline:
        # Duplicates, unknown needs and cycles, each message naming the steps (domain.graph).
        try:
            resolve([s.name for s in self.steps], [s.needs for s in self.steps])
        except GraphError as exc:
            raise ValueError(exc.message) from None
        return self

    def graph(self) -> list[StepNode]:
        return resolve([s.name for s in self.steps], [s.needs for s in self.steps])

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def missing_private_values(self) -> list[str]:
        return [
            f"{step.name}.{key}"
            for step in self.steps
            for key in step.private_keys()
            if not (step.private_env or {}).get(key)
        ]

    def public_steps(self) -> list[dict[str, Any]]:
        return [s.public() for s in self.steps]

    def tools(self) -> list[str]:
        return sorted({tool for s in self.steps for tool in s.tools()})

    def datasets(self) -> list[str]:
        names = {s.output_dataset for s in self.steps}
        names.update(s.input_dataset for s in self.steps if s.input_dataset)
        return sorted(names)


def node_branch(step: str, instance: str) -> str:
    """The branch a step writes to in its output dataset."""
    return f"{step}-{instance}"
