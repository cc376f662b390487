"""Lineage (``GET /lineage``): datasets and pipelines as one graph, from what the federation's
registries and this instance hold.

- A step that reads dataset D makes an edge ``D -> pipeline`` (``reads``); one that writes D an edge
  ``pipeline -> D`` (``writes``), each naming its steps.
- A data trigger on D makes an edge ``D -> pipeline`` (``triggers``) with its scope: this instance's
  triggers from its database, federation-wide ones from etcd.
- A pipeline is ``federation`` when a federation-wide schedule or trigger starts it; ``instances``
  are those that initialised it (its registration); ``here`` when this instance did.
- The tools the steps use, with their registrations and where they are used (the console's tools page).

``build_lineage`` is a pure function over typed inputs (tested with generated pipelines); ``collect``
gathers them. While etcd is away the graph is this instance's alone and ``etcd`` says why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..domain.pipeline import Pipeline, Tool
from ..errors import MaoError
from ..federation.records import ScheduleRecord
from ..store import Store

NodeKind = Literal["dataset", "pipeline"]
DATASET: NodeKind = "dataset"
PIPELINE: NodeKind = "pipeline"
EdgeKind = Literal["reads", "writes", "triggers"]
Scope = Literal["instance", "federation"]


# -- inputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepUse:
    name: str
    tool: str
    output_dataset: str
    input_dataset: str | None = None
    fallback_tool: str | None = None
    replacements: tuple[str, ...] = ()  # a strategy's replacements (role "fallback" too)


@dataclass(frozen=True)
class PipelineUse:
    name: str
    steps: tuple[StepUse, ...]
    here: bool
    instances: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class TriggerUse:
    id: str
    pipeline: str
    dataset: str
    scope: Scope


@dataclass(frozen=True)
class Sources:
    """What ``build_lineage`` draws from. ``datasets`` / ``tools`` None: the registry was not read."""

    pipelines: Sequence[PipelineUse]
    triggers: Sequence[TriggerUse] = ()
    federation_pipelines: frozenset[str] = frozenset()  # started by a federation-wide schedule/trigger
    datasets: Sequence[str] | None = None
    tools: Sequence[Tool] | None = None
    etcd: str = "ok"


# -- the answer -----------------------------------------------------------------------------------
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class LineageNode(_Frozen):
    id: str = Field(description="'dataset:<name>' or 'pipeline:<name>'")
    kind: NodeKind
    name: str
    registered: bool | None = Field(
        default=None, description="dataset: in the federation's registry (null: etcd was not reachable)"
    )
    here: bool = Field(description="pipeline: initialised on this instance; dataset: used by one that is")
    instances: list[str] = Field(default_factory=list, description="pipeline: the instances that have it")
    federation: bool = Field(
        default=False, description="pipeline: a federation-wide schedule or data trigger starts it"
    )
    description: str = ""


class LineageEdge(_Frozen):
    source: str
    target: str
    kind: EdgeKind
    steps: list[str] = Field(default_factory=list, description="reads/writes: the steps that do")
    scope: Scope | None = Field(default=None, description="triggers only")
    triggers: list[str] = Field(default_factory=list, description="triggers only: their ids")


class ToolUser(_Frozen):
    pipeline: str
    step: str
    role: Literal["tool", "fallback"]
    here: bool


class ToolEntry(_Frozen):
    name: str
    registered: bool | None = Field(description="in the federation's registry (null: etcd was not reachable)")
    image: str | None = None
    author: str = ""
    description: str = ""
    code_repo: str = ""
    data_repo: str = ""
    artefact: str = ""
    used_by: list[ToolUser] = Field(default_factory=list)


class Lineage(_Frozen):
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    tools: list[ToolEntry]
    etcd: str = Field(
        description="'ok', or why the registries could not be read (the graph is this instance's)"
    )


def node_id(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def build_lineage(sources: Sources) -> Lineage:
    pipelines = {p.name: p for p in sources.pipelines}
    registered = set(sources.datasets) if sources.datasets is not None else None
    dataset_names = set(registered or ())
    pipeline_names = set(pipelines)
    used_here: set[str] = set()
    edges: dict[tuple[str, str, EdgeKind, Scope | None], list[str]] = {}

    def add_edge(dataset: str, pipeline: str, kind: EdgeKind, scope: Scope | None, item: str) -> None:
        dataset_names.add(dataset)
        pipeline_names.add(pipeline)
        ends = (node_id(PIPELINE, pipeline), node_id(DATASET, dataset))
        source, target = ends if kind == "writes" else ends[::-1]
        items = edges.setdefault((source, target, kind, scope), [])
        if item not in items:
            items.append(item)

    for use in pipelines.values():
        for step in use.steps:
            if use.here:
                used_here.update(d for d in (step.input_dataset, step.output_dataset) if d)
            if step.input_dataset:
                add_edge(step.input_dataset, use.name, "reads", None, step.name)
            add_edge(step.output_dataset, use.name, "writes", None, step.name)
    for trigger in sources.triggers:
        add_edge(trigger.dataset, trigger.pipeline, "triggers", trigger.scope, trigger.id)

    nodes = [
        LineageNode(
            id=node_id(DATASET, name),
            kind=DATASET,
            name=name,
            registered=None if registered is None else name in registered,
            here=name in used_here,
        )
        for name in sorted(dataset_names)
    ]
    for name in sorted(pipeline_names):
        known = pipelines.get(name)
        nodes.append(
            LineageNode(
                id=node_id(PIPELINE, name),
                kind=PIPELINE,
                name=name,
                here=bool(known and known.here),
                instances=sorted(set(known.instances)) if known else [],
                federation=name in sources.federation_pipelines,
                description=known.description if known else "",
            )
        )
    lines = [
        LineageEdge(
            source=source,
            target=target,
            kind=kind,
            steps=items if kind != "triggers" else [],
            scope=scope,
            triggers=items if kind == "triggers" else [],
        )
        for (source, target, kind, scope), items in sorted(edges.items(), key=lambda e: tuple(map(str, e[0])))
    ]
    tools = _tools(pipelines.values(), sources.tools)
    return Lineage(nodes=nodes, edges=lines, tools=tools, etcd=sources.etcd)


def _tools(pipelines: Iterable[PipelineUse], registered: Sequence[Tool] | None) -> list[ToolEntry]:
    users: dict[str, list[ToolUser]] = {}
    for p in pipelines:
        for step in p.steps:
            users.setdefault(step.tool, []).append(
                ToolUser(pipeline=p.name, step=step.name, role="tool", here=p.here)
            )
            for fallback in ((step.fallback_tool,) if step.fallback_tool else ()) + step.replacements:
                users.setdefault(fallback, []).append(
                    ToolUser(pipeline=p.name, step=step.name, role="fallback", here=p.here)
                )
    known = {t.name: t for t in registered or ()}
    entries = []
    for name in sorted(set(known) | set(users)):
        tool = known.get(name)
        details = tool.model_dump(exclude={"name"}) if tool else {}
        entries.append(
            ToolEntry(
                name=name,
                registered=None if registered is None else tool is not None,
                used_by=sorted(users.get(name, []), key=lambda u: (u.pipeline, u.step, u.role)),
                **details,
            )
        )
    return entries


# -- gathering ------------------------------------------------------------------------------------
class RegistryReads(Protocol):
    """What lineage reads of the federation's registries (federation.registry.Registry)."""

    async def pipelines(self) -> dict[str, dict[str, Any]]: ...

    async def dataset_names(self) -> list[str]: ...

    async def tools(self) -> list[Tool]: ...


def local_use(pipeline: Pipeline, instances: Sequence[str]) -> PipelineUse:
    steps = tuple(
        StepUse(
            s.name,
            s.tool,
            s.output_dataset,
            s.input_dataset,
            s.fallback_tool,
            tuple(s.tools()[1:]) if s.strategy else (),
        )
        for s in pipeline.steps
    )
    return PipelineUse(pipeline.name, steps, True, tuple(instances), pipeline.description)


def registered_use(name: str, registration: dict[str, Any]) -> PipelineUse:
    """A registration of another instance's pipeline: its public steps, read leniently (a field this
    version does not know is ignored; a step without the names a graph needs is left out)."""
    steps = []
    for raw in registration.get("steps", []):
        if not isinstance(raw, dict):
            continue
        tool, output = raw.get("tool"), raw.get("output_dataset")
        if not (isinstance(raw.get("name"), str) and isinstance(tool, str) and isinstance(output, str)):
            continue
        source, fallback = raw.get("input_dataset"), raw.get("fallback_tool")
        steps.append(
            StepUse(
                raw["name"],
                tool,
                output,
                source if isinstance(source, str) and source else None,
                fallback if isinstance(fallback, str) and fallback else None,
                _replacements(raw.get("strategy")),
            )
        )
    instances = tuple(i for i in registration.get("instances", []) if isinstance(i, str))
    description = registration.get("description")
    return PipelineUse(
        name, tuple(steps), False, instances, description if isinstance(description, str) else ""
    )


def _replacements(strategy: Any) -> tuple[str, ...]:
    found = strategy.get("replacements") if isinstance(strategy, dict) else None
    return tuple(t for t in found if isinstance(t, str) and t) if isinstance(found, list) else ()


async def collect(
    store: Store,
    registry: RegistryReads,
    federation_schedules: Callable[[], Awaitable[list[ScheduleRecord]]],
    instance: str,
) -> Lineage:
    local = await store.list_pipelines()
    local_triggers = [
        TriggerUse(t.id, t.pipeline, t.dataset, "instance")
        for t in await store.data_triggers()
        if t.dataset is not None
    ]
    try:
        registrations = await registry.pipelines()
        datasets: list[str] | None = await registry.dataset_names()
        tools: list[Tool] | None = await registry.tools()
        schedules = await federation_schedules()
        etcd = "ok"
    except MaoError as exc:  # etcd away (or a registry entry it cannot read): this instance's graph
        registrations, datasets, tools, schedules = {}, None, None, []
        etcd = exc.message
    uses = [local_use(p, registrations.get(p.name, {}).get("instances") or [instance]) for p in local]
    here = {p.name for p in local}
    uses += [registered_use(name, r) for name, r in sorted(registrations.items()) if name not in here]
    federation_triggers = [
        TriggerUse(s.id, s.pipeline, s.trigger.dataset, "federation")
        for s in schedules
        if s.trigger is not None
    ]
    return build_lineage(
        Sources(
            pipelines=uses,
            triggers=local_triggers + federation_triggers,
            federation_pipelines=frozenset(s.pipeline for s in schedules),
            datasets=datasets,
            tools=tools,
            etcd=etcd,
        )
    )
