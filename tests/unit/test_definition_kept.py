"""The current definition a run takes is read from the database once per stamp and then kept
(``PipelineVersions.for_run``). Generated: any sequence of inits (changing steps, private values),
deletes and reads, with reads made while a write is held inside its transaction and right after it:
every read gives exactly what a read of the database gives at that moment (or, during a write, what
it gave before it), private values and version number included, and a kept definition is a copy
the reader may change without changing the next reader's."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.versions import VersionedPipeline
from orchestrator.store import Store
from orchestrator.store.versions import PipelineVersions

# ("init", variant) | ("delete", 0) | ("read", 0) | ("held init", variant) | ("held delete", 0)
OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["init", "held init"]), st.integers(0, 3)),
        st.tuples(st.sampled_from(["delete", "read", "held delete"]), st.just(0)),
    ),
    min_size=1,
    max_size=14,
)


def definition(variant: int) -> Pipeline:
    steps: list[dict[str, Any]] = [
        {"name": "a", "tool": "t", "output_dataset": "d", "env": {"K": str(variant)}},
        {"name": "b", "tool": "t", "output_dataset": "e", "needs": ["a"]} if variant % 2 else None,
    ]
    for step in steps:
        if step is not None and variant >= 2:
            step["private_env"] = {"SECRET": f"s{variant}"}
    return Pipeline.model_validate({"name": "p", "steps": [s for s in steps if s is not None]})


def shape(found: VersionedPipeline | None) -> Any:
    if found is None:
        return None
    return found.version, found.pipeline.model_dump(), [s.private_env for s in found.pipeline.steps]


async def nothing() -> None:
    return None


class Hold:
    """A write's ``before_commit`` that holds it inside its transaction until released."""

    def __init__(self) -> None:
        self.inside = asyncio.Event()
        self.release = asyncio.Event()

    async def held(self) -> None:
        self.inside.set()
        await self.release.wait()


@settings(max_examples=30, deadline=None)
@given(OPS)
def test_a_kept_definition_is_what_the_database_holds(ops: list[tuple[str, int]]) -> None:
    asyncio.run(_ops(ops))


async def _ops(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite+aiosqlite:///{Path(folder) / 'db.sqlite'}")
        await store.start()
        versions = PipelineVersions(store)
        try:
            for op, variant in ops:
                before = shape(await versions._read("p", None))
                if op == "read":
                    found = await versions.for_run("p", None)
                    assert shape(found) == before
                    if found is not None:  # the reader's copy is its own
                        found.pipeline.steps[0].env["K"] = "changed by a reader"
                        assert shape(await versions.for_run("p", None)) == before
                elif op in ("init", "delete"):
                    await _write(store, op, variant, None)
                else:  # a read while the write is held inside its transaction, and one right after
                    hold = Hold()
                    task = asyncio.create_task(_write(store, op.removeprefix("held "), variant, hold.held))
                    await hold.inside.wait()
                    assert shape(await versions.for_run("p", None)) == before
                    hold.release.set()
                    await task
                assert shape(await versions.for_run("p", None)) == shape(await versions._read("p", None))
        finally:
            await store.close()


async def _write(store: Store, op: str, variant: int, held: Any) -> None:
    if op == "init":
        await store.save_pipeline(definition(variant), before_commit=held or nothing)
    else:
        await store.delete_pipeline("p", before_commit=held or nothing)
