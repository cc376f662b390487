"""Pipeline versions without servers: the hash (one per meaning, not per spelling), the structured
difference (exactly the steps and fields that differ, checked against generated definitions), the
unified text, and the store's side (a version per change, none for the same definition, numbering
kept across a delete, an earlier version with today's private values) on SQLite."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.pipeline import PRIVATE_PLACEHOLDER, Pipeline
from orchestrator.domain.versions import definition, definition_hash, difference
from orchestrator.store import Store
from orchestrator.store.versions import PipelineVersions, UnknownVersion

NAMES = st.sampled_from(["a", "b", "c", "d", "e", "f"])
WORDS = st.text(alphabet="abcxyz019 ._-", min_size=0, max_size=8)


@st.composite
def steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    result = []
    for name in names:
        step: dict[str, Any] = {"name": name, "tool": draw(st.sampled_from(["t1", "t2"])), "output_dataset": "out"}
        if draw(st.booleans()):
            step["cmd"] = draw(st.lists(WORDS, max_size=3))
        if draw(st.booleans()):
            step["env"] = draw(st.dictionaries(st.sampled_from(["A", "B", "C"]), WORDS, max_size=3))
        if draw(st.booleans()):
            step["retries"] = draw(st.integers(0, 3))
        if draw(st.booleans()):
            step["timeout"] = draw(st.sampled_from([1.0, 30.0]))
        if draw(st.booleans()):
            step["needs"] = []  # a root (absent: the previous step)
        result.append(step)
    return result


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    data = {"name": "p", "steps": draw(steps())}
    if draw(st.booleans()):
        data["description"] = draw(WORDS)
    if draw(st.booleans()):
        data["run_timeout"] = draw(st.sampled_from([60.0, 600.0]))
    return Pipeline.model_validate(data)


def test_one_hash_per_meaning_not_per_spelling() -> None:
    plain = {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "o"}]}
    spelt = {
        "name": "p",
        "description": "",
        "steps": [{"name": "s", "tool": "t", "output_dataset": "o", "cmd": [], "retries": 0,
                   "docker_socket": False, "input_dataset": "", "memory": None}],  # fmt: skip
    }
    assert definition_hash(Pipeline.model_validate(plain)) == definition_hash(Pipeline.model_validate(spelt))
    # Numbers in env are strings to a container: the same definition.
    a = {**plain, "steps": [{**plain["steps"][0], "env": {"N": 3}}]}
    b = {**plain, "steps": [{**plain["steps"][0], "env": {"N": "3"}}]}
    assert definition_hash(Pipeline.model_validate(a)) == definition_hash(Pipeline.model_validate(b))
    # A private value is not part of the definition; a changed cmd is.
    secret = {**plain, "steps": [{**plain["steps"][0], "env": {"K": PRIVATE_PLACEHOLDER}}]}
    one = Pipeline.model_validate({**secret, "steps": [{**secret["steps"][0], "private_env": {"K": "x"}}]})
    two = Pipeline.model_validate({**secret, "steps": [{**secret["steps"][0], "private_env": {"K": "y"}}]})
    assert definition_hash(one) == definition_hash(two)
    assert "private_env" not in str(definition(one)) and "'x'" not in str(definition(one))
    other = {**plain, "steps": [{**plain["steps"][0], "cmd": ["true"]}]}
    assert definition_hash(Pipeline.model_validate(other)) != definition_hash(Pipeline.model_validate(plain))


@settings(max_examples=100, deadline=None)
@given(pipelines(), pipelines())
def test_the_difference_names_exactly_what_differs(before: Pipeline, after: Pipeline) -> None:
    found = difference(before, after)
    old = {s["name"]: (i, s) for i, s in enumerate(definition(before)["steps"])}
    new = {s["name"]: (i, s) for i, s in enumerate(definition(after)["steps"])}
    expected = {name for name in new if name not in old or old[name] != new[name]}
    expected |= {name for name in old if name not in new}
    assert {c.step for c in found.steps} == expected
    for change in found.steps:
        if change.change == "added":
            assert change.step not in old and change.position_after == new[change.step][0]
        elif change.change == "removed":
            assert change.step not in new and change.position_before == old[change.step][0]
        else:
            # Applying the listed field changes to the old step gives the new one.
            step = copy.deepcopy(old[change.step][1])
            for field in change.fields:
                _put(step, field.field.split("."), field.after)
            assert _without_nones(step) == _without_nones(new[change.step][1])
    same_hash = definition_hash(before) == definition_hash(after)
    assert found.same == same_hash == (not found.steps and not found.pipeline_fields)
    assert (found.unified == "") == found.same


@settings(max_examples=100, deadline=None)
@given(pipelines())
def test_a_definition_against_itself_and_against_nothing(pipeline: Pipeline) -> None:
    assert difference(pipeline, pipeline).same
    first = difference(None, pipeline)
    assert [c.change for c in first.steps] == ["added"] * len(pipeline.steps)
    assert first.unified.count("\n+") >= len(pipeline.steps)
    # The stored definition reads back to the same hash (what an init compares).
    assert definition_hash(Pipeline.model_validate(definition(pipeline))) == definition_hash(pipeline)


def test_a_changed_env_variable_is_its_own_field() -> None:
    base = {"name": "p", "steps": [{"name": "s", "tool": "t", "output_dataset": "o", "env": {"A": "1", "B": "2"}}]}
    changed = copy.deepcopy(base)
    changed["steps"][0]["env"] = {"A": "1", "B": "3", "C": "4"}
    changed["steps"].append({"name": "more", "tool": "t", "output_dataset": "o"})
    found = difference(Pipeline.model_validate(base), Pipeline.model_validate(changed), ("v1", "v2"))
    (step, added) = found.steps
    assert (step.step, step.change, added.step, added.change) == ("s", "changed", "more", "added")
    assert [(f.field, f.before, f.after) for f in step.fields] == [("env.B", "2", "3"), ("env.C", None, "4")]
    assert found.in_one_line() == "changed step s (env.B, env.C); added step more"
    assert found.unified.startswith("--- v1\n+++ v2\n")
    assert '-        "B": "2"\n' in found.unified and '+        "B": "3",' in found.unified


def _put(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value


def _without_nones(data: Any) -> Any:
    """Unset and empty read alike here: a field set to None by a change, or emptied key by key."""
    if isinstance(data, dict):
        kept = {k: _without_nones(v) for k, v in data.items()}
        return {k: v for k, v in kept.items() if v is not None and v != {}}
    return data


# -- the store --------------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'v.sqlite'}")
    await store.start()
    yield store
    await store.close()


async def _nothing() -> None:
    return None


def _pipeline(cmd: str, private: dict[str, str] | None = None, env: dict[str, str] | None = None) -> Pipeline:
    step: dict[str, Any] = {"name": "s", "tool": "t", "output_dataset": "o", "cmd": ["sh", "-c", cmd]}
    if env:
        step["env"] = env
    if private:
        step["private_env"] = private
    return Pipeline.model_validate({"name": "p", "steps": [step]})


async def test_versions_are_recorded_on_change_only_and_outlive_a_delete(store: Store) -> None:
    saved = [
        await store.save_pipeline(_pipeline(cmd), _nothing, by=who)
        for cmd, who in (("one", "ops"), ("one", "ops"), ("two", "bot"), ("one", "ops"))
    ]
    assert [(s.number, s.new) for s in saved] == [(1, True), (1, False), (2, True), (3, True)]
    assert saved[0].hash == saved[3].hash != saved[2].hash  # back to the first definition: a new number
    versions = PipelineVersions(store)
    assert [v.number for v in await versions.recent("p", 10)] == [3, 2, 1]
    assert (await versions.get("p", 2)).created_by == "bot"  # type: ignore[union-attr]
    await store.delete_pipeline("p", _nothing)
    assert await versions.current() == {}
    assert await versions.for_run("p", None) is None
    again = await store.save_pipeline(_pipeline("four"), _nothing)
    assert (again.number, again.new) == (4, True)
    assert await versions.current() == {"p": 4}


async def test_a_run_takes_an_earlier_version_with_todays_private_values(store: Store) -> None:
    env = {"TOKEN": PRIVATE_PLACEHOLDER, "PLAIN": "p"}
    await store.save_pipeline(_pipeline("old", {"TOKEN": "t1"}, env), _nothing)
    await store.save_pipeline(_pipeline("new", {"TOKEN": "t2", "PLAIN": "override"}, env), _nothing)
    versions = PipelineVersions(store)
    current = await versions.for_run("p", None)
    old = await versions.for_run("p", 1)
    assert current is not None and old is not None
    assert (current.version, current.pipeline.steps[0].cmd) == (2, ["sh", "-c", "new"])
    assert (old.version, old.pipeline.steps[0].cmd) == (1, ["sh", "-c", "old"])
    # Today's value of the variable version 1 marks private; never one it does not mark private.
    assert old.pipeline.steps[0].private_env == {"TOKEN": "t2"}
    with pytest.raises(UnknownVersion):
        await versions.for_run("p", 9)


@given(pipelines(), st.integers(min_value=1, max_value=10**6))
def test_the_version_a_request_was_read_at_is_not_part_of_its_definition(pipeline: Pipeline, read_at: int) -> None:
    from orchestrator.request_models import PipelineRequest

    request = PipelineRequest.model_validate({**pipeline.model_dump(), "version": read_at})
    assert definition_hash(request) == definition_hash(pipeline)
    assert definition(request) == definition(pipeline)
