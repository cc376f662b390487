"""The lineage graph (``orchestrator/pipelines/lineage.py``) over generated pipelines, triggers and
registries: every edge joins two nodes, each step is exactly its reads/writes edges, each trigger its
triggers edge, nothing else; flags (registered, here, federation) and tool uses follow the inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.pipeline import Pipeline, Tool
from orchestrator.errors import EtcdUnavailable
from orchestrator.pipelines.lineage import (
    PipelineUse,
    Sources,
    StepUse,
    TriggerUse,
    build_lineage,
    collect,
    registered_use,
)
from orchestrator.store import Store

NAMES = st.sampled_from(["a", "b", "c", "d"])
DATASETS = st.sampled_from(["raw", "clean", "report", "x"])
TOOLS = st.sampled_from(["t1", "t2", "t3"])


@st.composite
def pipelines(draw: st.DrawFn) -> list[PipelineUse]:
    names = draw(st.lists(NAMES, unique=True, max_size=4))
    found = []
    for name in names:
        steps = tuple(
            StepUse(
                f"s{i}",
                draw(TOOLS),
                draw(DATASETS),
                draw(st.one_of(st.none(), DATASETS)),
                draw(st.one_of(st.none(), TOOLS)),
            )
            for i in range(draw(st.integers(1, 3)))
        )
        found.append(PipelineUse(name, steps, draw(st.booleans()), tuple(draw(st.lists(NAMES, max_size=2)))))
    return found


@st.composite
def sources(draw: st.DrawFn) -> Sources:
    uses = draw(pipelines())
    triggers = [
        TriggerUse(f"tr{i}", draw(NAMES), draw(DATASETS), draw(st.sampled_from(["instance", "federation"])))
        for i in range(draw(st.integers(0, 3)))
    ]
    return Sources(
        pipelines=uses,
        triggers=triggers,
        federation_pipelines=frozenset(draw(st.lists(NAMES, max_size=2))),
        datasets=draw(st.one_of(st.none(), st.lists(DATASETS, unique=True))),
        tools=draw(
            st.one_of(
                st.none(),
                st.lists(TOOLS, unique=True).map(lambda ns: [Tool(name=n, image="busybox") for n in ns]),
            )
        ),
    )


@settings(max_examples=100, deadline=None)
@given(sources())
def test_lineage_is_exactly_the_steps_and_triggers(src: Sources) -> None:
    graph = build_lineage(src)
    ids = [n.id for n in graph.nodes]
    assert len(ids) == len(set(ids))
    assert all(n.id == f"{n.kind}:{n.name}" for n in graph.nodes)
    for e in graph.edges:
        assert e.source in ids and e.target in ids

    wanted: dict[tuple[str, str, str, str | None], set[str]] = {}
    for p in src.pipelines:
        for s in p.steps:
            wanted.setdefault(
                (f"pipeline:{p.name}", f"dataset:{s.output_dataset}", "writes", None), set()
            ).add(s.name)
            if s.input_dataset:
                wanted.setdefault(
                    (f"dataset:{s.input_dataset}", f"pipeline:{p.name}", "reads", None), set()
                ).add(s.name)
    for t in src.triggers:
        wanted.setdefault((f"dataset:{t.dataset}", f"pipeline:{t.pipeline}", "triggers", t.scope), set()).add(
            t.id
        )
    got = {(e.source, e.target, e.kind, e.scope): set(e.steps or e.triggers) for e in graph.edges}
    assert got == wanted

    nodes = {n.id: n for n in graph.nodes}
    for name in {s for s in src.datasets or ()}:
        assert nodes[f"dataset:{name}"].registered is True
    for n in graph.nodes:
        if n.kind == "dataset":
            assert n.registered == (None if src.datasets is None else n.name in src.datasets)
        else:
            assert n.federation == (n.name in src.federation_pipelines)
            use = next((p for p in src.pipelines if p.name == n.name), None)
            assert n.here == bool(use and use.here)

    uses = {(p.name, s.name, s.tool, "tool") for p in src.pipelines for s in p.steps}
    uses |= {
        (p.name, s.name, s.fallback_tool, "fallback")
        for p in src.pipelines
        for s in p.steps
        if s.fallback_tool
    }
    assert {(u.pipeline, u.step, t.name, u.role) for t in graph.tools for u in t.used_by} == uses
    registered = None if src.tools is None else {t.name for t in src.tools}
    for t in graph.tools:
        assert t.registered == (None if registered is None else t.name in registered)


def test_a_registration_is_read_leniently() -> None:
    use = registered_use(
        "p",
        {
            "steps": [
                {"name": "ok", "tool": "t", "output_dataset": "d", "input_dataset": "", "future_field": 1},
                {"name": "broken", "tool": 3, "output_dataset": "d"},
                {
                    "name": "reads",
                    "tool": "t",
                    "output_dataset": "e",
                    "input_dataset": "d",
                    "fallback_tool": "u",
                },
            ],
            "instances": ["fed-a", 7, "fed-b"],
            "description": None,
        },
    )
    assert [s.name for s in use.steps] == ["ok", "reads"]
    assert use.steps[0].input_dataset is None and use.steps[1].fallback_tool == "u"
    assert use.instances == ("fed-a", "fed-b") and use.description == "" and not use.here


class AwayRegistry:
    """The registries while etcd is unreachable."""

    async def pipelines(self) -> dict[str, dict[str, Any]]:
        raise EtcdUnavailable("etcd did not answer (test)")

    async def dataset_names(self) -> list[str]:
        raise EtcdUnavailable("etcd did not answer (test)")

    async def tools(self) -> list[Tool]:
        raise EtcdUnavailable("etcd did not answer (test)")


async def test_without_etcd_the_graph_is_this_instances(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'mao.db'}")
    await store.start()
    try:
        pipeline = Pipeline.model_validate(
            {
                "name": "p",
                "steps": [{"name": "s", "tool": "t", "input_dataset": "raw", "output_dataset": "out"}],
            }
        )

        async def nothing() -> None:
            return None

        await store.save_pipeline(pipeline, nothing)
        await store.add_schedule("trig", "p", "", "UTC", dataset="raw")

        async def no_schedules() -> list[dict[str, Any]]:
            raise EtcdUnavailable("etcd did not answer (test)")

        graph = await collect(store, AwayRegistry(), no_schedules, "fed-a")
    finally:
        await store.close()
    assert graph.etcd == "etcd did not answer (test)"
    assert {(n.id, n.registered, n.here) for n in graph.nodes} == {
        ("dataset:out", None, True),
        ("dataset:raw", None, True),
        ("pipeline:p", None, True),
    }
    assert {(e.source, e.target, e.kind) for e in graph.edges} == {
        ("dataset:raw", "pipeline:p", "reads"),
        ("pipeline:p", "dataset:out", "writes"),
        ("dataset:raw", "pipeline:p", "triggers"),
    }
    assert [(t.name, t.registered) for t in graph.tools] == [("t", None)]
    assert graph.nodes[-1].instances == ["fed-a"]
