"""``POST /pipeline/run`` reads the registrations its pipeline's pins name beside the pipeline's own
read (``Pins.pinned``, ``Pins.read``) and hands them to the check (``Pins.changes(pipeline, read)``).
Whatever was read ahead (the registrations the pipeline uses, some, none, others it no longer uses),
and whatever each registration is now (as pinned, its image, master or owner changed, gone, not
valid, etcd away), the check's outcome is the one it has when it reads everything itself: the same
changes, or the same error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.pipeline import Dataset, Pipeline, Tool
from orchestrator.errors import EtcdUnavailable, MalformedEntry, MaoError
from orchestrator.federation.ownership import Provenance
from orchestrator.federation.registry import Registered
from orchestrator.merging.pins import Pins, pin_value
from orchestrator.store.pins import PinRecord, pin_record

TOOLS = ("t1", "t2", "t3")
DATASETS = ("d1", "d2", "d3")
STATES = ("pinned", "changed", "owner", "gone", "malformed", "etcd away")


def entry(kind: str, name: str, changed: bool = False, owner: str = "fed-a") -> Registered[Any]:
    value: Any = (
        Tool(name=name, image="evil:latest" if changed else "busybox:latest")
        if kind == "tool"
        else Dataset(name=name, master="/elsewhere.git" if changed else "/master.git")
    )
    return Registered(value, Provenance(owner, 1, None, None, "claim"), 1)


class Registrations:
    def __init__(self, states: dict[tuple[str, str], str]) -> None:
        self.states = states

    async def _entry(self, kind: str, name: str) -> Registered[Any] | None:
        await asyncio.sleep(0)
        state = self.states.get((kind, name), "pinned")
        if state == "gone":
            return None
        if state == "malformed":
            raise MalformedEntry(f"{kind} {name} is not valid", key=f"/mao/v1/{kind}s/{name}")
        if state == "etcd away":
            raise EtcdUnavailable(f"etcd did not answer for {kind} {name}")
        return entry(kind, name, changed=state == "changed", owner="fed-b" if state == "owner" else "fed-a")

    async def tool_entry(self, name: str) -> Registered[Any] | None:
        return await self._entry("tool", name)

    async def dataset_entry(self, name: str) -> Registered[Any] | None:
        return await self._entry("dataset", name)


class PinStore:
    """Every registration pinned as first registered, in the pipeline's scope."""

    def __init__(self) -> None:
        self.records = [
            pin_record("p", kind, name, pin_value(kind, entry(kind, name)))
            for kind, names in (("tool", TOOLS), ("dataset", DATASETS))
            for name in names
        ]

    async def scope(self, scope: str) -> list[PinRecord]:
        return [r for r in self.records if r.scope == scope]

    async def put(self, records: Sequence[PinRecord]) -> None:
        self.records += records


def pipeline(tools: list[str], datasets: list[str]) -> Pipeline:
    steps = [
        {"name": f"s{i}", "tool": tool, "output_dataset": datasets[i % len(datasets)]}
        for i, tool in enumerate(tools)
    ]
    return Pipeline.model_validate({"name": "p", "steps": steps})


async def outcome(pins: Pins, used: Pipeline, ahead: list[tuple[str, str]] | None) -> Any:
    try:
        read = None if ahead is None else await pins.read(ahead)
        return sorted(c.sentence() for c in await pins.changes(used, read))
    except MaoError as exc:
        return type(exc).__name__, exc.message


ALL = [("tool", t) for t in TOOLS] + [("dataset", d) for d in DATASETS]


@settings(max_examples=150, deadline=None)
@given(
    tools=st.lists(st.sampled_from(TOOLS), min_size=1, max_size=3, unique=True),
    datasets=st.lists(st.sampled_from(DATASETS), min_size=1, max_size=3, unique=True),
    states=st.dictionaries(st.sampled_from(ALL), st.sampled_from(STATES)),
    ahead=st.lists(st.sampled_from(ALL), unique=True),
)
def test_reading_ahead_never_changes_the_checks_outcome(
    tools: list[str], datasets: list[str], states: dict[tuple[str, str], str], ahead: list[tuple[str, str]]
) -> None:
    used = pipeline(tools, datasets)

    async def both() -> tuple[Any, Any]:
        itself = await outcome(Pins(PinStore(), Registrations(states)), used, None)  # type: ignore[arg-type]
        read_ahead = await outcome(Pins(PinStore(), Registrations(states)), used, ahead)  # type: ignore[arg-type]
        return itself, read_ahead

    itself, read_ahead = asyncio.run(both())
    assert read_ahead == itself


def test_the_pins_name_what_to_read_once_read() -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        pins = Pins(PinStore(), Registrations({}))  # type: ignore[arg-type]
        before = pins.pinned("p")
        await pins.changes(pipeline(["t1"], ["d1"]))
        after = pins.pinned("p")
        pins.forget("p")  # an init or a delete
        return before, after, pins.pinned("p")

    before, after, forgotten = asyncio.run(scenario())
    assert before == [] and forgotten == []
    assert sorted(after) == sorted(ALL)  # the scope's pins, as stored
