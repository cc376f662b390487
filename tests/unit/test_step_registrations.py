"""A step reads its registrations (output dataset, input dataset, tool) through the pins when it
starts, side by side: one etcd round trip's wait instead of one per registration, with the same
outcome as reading them one by one. Whatever subset of the reads fails, in whatever order the reads
end, the step's error is the first failure in the order output, input, tool; a registration changed
after the API's check and before the step still fails the step with ``registration_changed``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config import load_settings
from orchestrator.domain.pipeline import Dataset, Pipeline, Tool
from orchestrator.errors import MaoError
from orchestrator.federation.ownership import LEGACY
from orchestrator.federation.registry import Registered
from orchestrator.merging.pins import Pins
from orchestrator.runs.steps import StepWork
from orchestrator.store.pins import PinStore
from tests.unit.test_run_record_guard import attempt_that, runner_for

# Which read each of a step's registrations is, in the order a sequential read made them.
ORDER = ("output", "input", "tool")


class Reads:
    """The step's pins: each read waits ``delays[what]`` event-loop turns, then fails when ``what``
    is in ``failing``; every read has begun before any ends when ``barrier`` is set."""

    def __init__(self, failing: set[str], delays: dict[str, int], barrier: bool = False) -> None:
        self.failing = failing
        self.delays = delays
        self.started: list[str] = []
        self.barrier = barrier

    async def _read(self, what: str) -> None:
        self.started.append(what)
        if self.barrier:
            while len(self.started) < len(self.delays):
                await asyncio.sleep(0)
        for _ in range(self.delays[what]):
            await asyncio.sleep(0)
        if what in self.failing:
            raise MaoError(f"{what} failed")

    async def dataset(self, scope: str, name: str) -> Dataset:
        await self._read("output" if name == "out" else "input")
        return Dataset(name=name, master="/nowhere.git")

    async def tool(self, scope: str, name: str) -> Tool:
        await self._read("tool")
        return Tool(name=name, image="busybox:latest")


def _step_run(with_input: bool) -> tuple[Any, Any]:
    step = {"name": "s", "tool": "t", "output_dataset": "out", **({"input_dataset": "in"} if with_input else {})}
    pipeline = Pipeline.model_validate({"name": "p", "steps": [step]})

    class Run:  # what ``StepWork._registrations`` reads of the run
        pass

    run = Run()
    run.pipeline = pipeline  # type: ignore[attr-defined]
    return run, pipeline.steps[0]


def _work(tmp_path: Path, pins: Reads) -> StepWork:
    """A ``StepWork`` with only its pins (``_registrations`` uses nothing else)."""
    unused: Any = object()
    settings = load_settings({"MAO_EXECUTOR_TOKEN": "t", "MAO_DATA_DIR": str(tmp_path), "MAO_ETCD_INSECURE": "1"})
    return StepWork(settings, pins, unused, unused, unused, unused, unused, unused, unused, unused)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    with_input=st.booleans(),
    failing=st.sets(st.sampled_from(ORDER)),
    delays=st.fixed_dictionaries({what: st.integers(0, 3) for what in ORDER}),
)
def test_the_steps_error_is_the_first_failure_in_reading_order(
    tmp_path: Path, with_input: bool, failing: set[str], delays: dict[str, int]
) -> None:
    reads = ORDER if with_input else ("output", "tool")
    delays = {what: delays[what] for what in reads}

    pins = Reads(failing, delays)

    async def scenario() -> Any:
        run, step = _step_run(with_input)
        try:
            return await _work(tmp_path, pins)._registrations(run, step)
        except MaoError as exc:
            return exc.message

    found = asyncio.run(scenario())
    assert sorted(pins.started) == sorted(reads)  # every read made, each once
    first_failure = next((what for what in reads if what in failing), None)
    if first_failure is not None:
        assert found == f"{first_failure} failed"
    else:
        output, source, tool = found
        assert output.name == "out" and tool.name == "t"
        assert (source.name if source else None) == ("in" if with_input else None)


def test_a_steps_reads_wait_together(tmp_path: Path) -> None:
    """Each read has begun before any ends (they would wait forever one by one)."""

    async def scenario() -> Any:
        run, step = _step_run(with_input=True)
        work = _work(tmp_path, Reads(set(), dict.fromkeys(ORDER, 0), barrier=True))
        return await asyncio.wait_for(work._registrations(run, step), 10)

    output, source, tool = asyncio.run(scenario())
    assert (output.name, source.name, tool.name) == ("out", "in", "t")


class Registry:
    """Registrations as etcd would answer them, changeable between reads."""

    def __init__(self) -> None:
        self.images = {"t": "busybox:latest"}

    async def tool_entry(self, name: str) -> Registered[Tool]:
        return Registered(Tool(name=name, image=self.images[name]), LEGACY, 1)

    async def dataset_entry(self, name: str) -> Registered[Dataset]:
        return Registered(Dataset(name=name, master="/nowhere.git"), LEGACY, 1)


def test_a_registration_changed_after_the_apis_check_fails_the_step(tmp_path: Path) -> None:
    """The API compared the registrations with the pins (nothing changed) and said so to the run;
    the tool's image is swapped before the steps start: each step that would use it fails with
    ``registration_changed`` and no attempt is made, as when the run read everything itself."""

    async def scenario() -> tuple[dict[str, Any], int]:
        async with runner_for(tmp_path) as (runner, store):
            registry = Registry()
            pins = Pins(PinStore(store), registry)  # type: ignore[arg-type]
            runner.pins = runner.steps.pins = pins
            attempts = 0

            async def attempt(*args: Any, **kwargs: Any) -> Any:
                nonlocal attempts
                attempts += 1
                return await attempt_that(None, None)(*args, **kwargs)

            runner.attempts.run = attempt  # type: ignore[method-assign]
            pipeline = await store.get_pipeline("p")
            assert pipeline is not None
            assert await pins.changes(pipeline) == []  # the API's check (it pins what it finds first)
            create = runner.records.create_many

            async def recorded_then_swapped(*args: Any, **kwargs: Any) -> Any:
                done = await create(*args, **kwargs)
                registry.images["t"] = "evil:latest"  # after the check, before any step
                return done

            runner.records.create_many = recorded_then_swapped  # type: ignore[method-assign]
            run_id = await runner.start("p", "manual", registrations_checked=True)
            await asyncio.wait_for(runner.wait(run_id), 30)
            record = await store.get_run(run_id)
            assert record is not None
            return record.to_json(), attempts

    record, attempts = asyncio.run(scenario())
    assert attempts == 0
    assert record["status"] == "failed"
    assert "registration_changed" in record["error"] and "evil:latest" in record["error"]
    statuses = {s["name"]: s["status"] for s in record["steps"]}
    assert statuses == {"a": "failed", "b": "skipped", "c": "failed"}


class SlowPinStore:
    """No pins stored yet (a pipeline from before pins, the raw listener's first batch); reading a
    scope's pins takes a few turns of the event loop, so two first reads overlap."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.records: list[Any] = []

    async def scope(self, scope: str) -> list[Any]:
        found = [r for r in self.records if r.scope == scope]
        for _ in range(self.turns):
            await asyncio.sleep(0)
        return found

    async def put(self, records: Any) -> None:
        await asyncio.sleep(0)
        self.records += records


@settings(max_examples=25, deadline=None)
@given(turns=st.integers(0, 4))
def test_pins_written_by_overlapping_first_reads_are_all_kept(turns: int) -> None:
    """A step's reads of a scope nobody read yet each pin what they find; every such pin stays in
    force afterwards: a tool swapped after its first use is refused, never pinned again as swapped."""

    async def scenario() -> str | None:
        registry = Registry()
        pins = Pins(SlowPinStore(turns), registry)  # type: ignore[arg-type]
        await asyncio.gather(pins.tool("p", "t"), pins.dataset("p", "out"), pins.dataset("p", "in"))
        registry.images["t"] = "evil:latest"
        try:
            await pins.tool("p", "t")
        except MaoError as exc:
            return exc.message
        return None

    refused = asyncio.run(scenario())
    assert refused is not None and "registration_changed" in refused and "evil:latest" in refused


class CountingPinStore(SlowPinStore):
    """Counts the pins written; a second write of one key is what PostgreSQL refuses (unique key)."""

    async def put(self, records: Any) -> None:
        for record in records:
            assert all(
                (r.scope, r.kind, r.name) != (record.scope, record.kind, record.name) for r in self.records
            ), f"{record.kind} {record.name} pinned twice"
        await super().put(records)


@settings(max_examples=25, deadline=None)
@given(turns=st.integers(0, 4), uses=st.integers(2, 4), swapped_at=st.integers(0, 4))
def test_first_uses_of_one_registration_at_once_write_one_pin(turns: int, uses: int, swapped_at: int) -> None:
    """Several first uses of one registration at once (a step whose input is its output, parallel
    steps): one pin is written, and a use that read a registration swapped meanwhile is refused
    against it, never pinned as swapped."""

    async def scenario() -> tuple[list[object], list[Any]]:
        registry = Registry()
        store = CountingPinStore(turns)
        pins = Pins(store, registry)  # type: ignore[arg-type]

        async def use(number: int) -> object:
            if number == swapped_at:
                registry.images["t"] = "evil:latest"
            try:
                return (await pins.tool("p", "t")).image
            except MaoError as exc:
                return exc.message

        results = await asyncio.gather(*(use(n) for n in range(uses)))
        return list(results), store.records

    results, records = asyncio.run(scenario())
    assert len(records) == 1
    pinned = records[0].value["image"]
    for result in results:
        assert result == pinned or f"registration_changed: tool t: image {pinned} -> " in str(result), result
    assert pinned == "busybox:latest" or swapped_at == 0
