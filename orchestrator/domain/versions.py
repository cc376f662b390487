"""Pipeline versions: what a version's definition is, its hash, and the difference between two.

A version's **definition** is the pipeline as other instances and API clients may see it (``{name,
description, steps, run_timeout}``, steps in their public form: no secret values; private values stay
the instance's, current ones, whatever version runs). Its **hash** is the SHA-256 of the canonical
form: the definition as the models validate it, fields at their default left out, keys sorted. Two
inits that differ only in how they spell the same thing (``cmd: []`` and ``cmd: null``, ``retries: 0``
and no ``retries``, an env number and its string) have one hash; so does a definition stored before
a later release added a field with a default, which is why the default is left out rather than
written down.

The **difference** between two definitions is structured (the pipeline's own fields, then each step
matched by name: added, removed or changed, with the changed fields, ``env.KEY`` for one variable)
and unified text (the two definitions as indented JSON, in ``difflib``'s unified format). Both are
computed on definitions re-validated by today's models, so a field a later release added never
shows as a change.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from .pipeline import Pipeline


@dataclass(frozen=True)
class VersionedPipeline:
    """A pipeline as a run takes it: with secret values, and the version number it is (None only
    for a pipeline whose versions were never recorded, which a migrated database does not have)."""

    pipeline: Pipeline
    version: int | None


@dataclass(frozen=True)
class ReadDefinition:
    """A pipeline's current definition as ``POST /pipeline/run`` read it for its checks, handed
    through the door to the run so that a run starting at once does not read it again
    (``store.versions.PipelineVersions.read_current``). ``stamp``: the store's stamp of the
    definition taken before the read; the run takes the definition only while the stamp has not
    moved (no init or delete of the pipeline ran since; None: one was under way), else it reads it
    again."""

    # Out of its repr (and so of any cause or ask printed): the definition holds private values.
    definition: VersionedPipeline = dataclasses.field(repr=False)
    stamp: int | None = None


# Fields of the pipeline itself, in the order a difference lists them (steps are listed apart).
PIPELINE_FIELDS = ("name", "description", "run_timeout")


def definition(pipeline: Pipeline) -> dict[str, Any]:
    """The version's definition: what ``GET /pipeline/{name}/versions/{n}`` shows and what is stored."""
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "steps": pipeline.public_steps(),
        "run_timeout": pipeline.run_timeout,
    }


def parse_definition(data: dict[str, Any]) -> Pipeline:
    """A stored definition as today's model reads it (no secret values: it never holds any)."""
    return Pipeline.model_validate(data)


def canonical(pipeline: Pipeline) -> str:
    """The canonical JSON the hash is taken of (see the module docstring)."""
    # Only the definition's own fields: a request model adds some (the ``version`` it was read at).
    data = pipeline.model_dump(
        mode="json",
        exclude_defaults=True,
        include=set(Pipeline.model_fields),
        exclude={"steps": {"__all__": {"private_env"}}},
    )
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def definition_hash(pipeline: Pipeline) -> str:
    return hashlib.sha256(canonical(pipeline).encode()).hexdigest()


class FieldChange(BaseModel):
    field: str = Field(description="a field name; env.KEY (or fan_out.KEY) for one key of an object field")
    before: Any = Field(description="null when the field was not set (or the step did not exist)")
    after: Any = Field(description="null when the field is not set (or the step was removed)")


class StepChange(BaseModel):
    step: str
    change: Literal["added", "removed", "changed"]
    position_before: int | None = Field(description="0-based place in the list of steps; null if added")
    position_after: int | None = Field(description="0-based place in the list of steps; null if removed")
    fields: list[FieldChange]


class Difference(BaseModel):
    same: bool = Field(description="true when the two definitions are the same (no change at all)")
    pipeline_fields: list[FieldChange] = Field(description="changes of description, run_timeout, name")
    steps: list[StepChange] = Field(description="steps added, removed or changed, in the newer order")
    unified: str = Field(description="the two definitions as indented JSON, as a unified text diff")

    def in_one_line(self) -> str:
        """One line: what changed ("added step x; changed step y (cmd, env.K); run_timeout")."""
        parts = [f.field for f in self.pipeline_fields]
        for step in self.steps:
            if step.change == "changed":
                parts.append(f"changed step {step.step} ({', '.join(f.field for f in step.fields)})")
            else:
                parts.append(f"{step.change} step {step.step}")
        return "; ".join(parts) if parts else "no change"


def difference(
    before: Pipeline | None, after: Pipeline, labels: tuple[str, str] = ("before", "after")
) -> Difference:
    """What changed from ``before`` (None: nothing, every step is added) to ``after``."""
    old = definition(before) if before is not None else None
    new = definition(after)
    pipeline_fields = [
        change
        for key in PIPELINE_FIELDS
        for change in _changes(key, old.get(key) if old else None, new.get(key))
    ]
    old_steps = {s["name"]: (i, s) for i, s in enumerate(old["steps"])} if old else {}
    new_steps = {s["name"]: (i, s) for i, s in enumerate(new["steps"])}
    steps: list[StepChange] = []
    for name, (position, step) in new_steps.items():
        if name not in old_steps:
            steps.append(StepChange(step=name, change="added", position_before=None,
                                    position_after=position, fields=_changes_of(None, step)))  # fmt: skip
            continue
        was, old_step = old_steps[name]
        fields = _changes_of(old_step, step)
        if fields or was != position:
            steps.append(StepChange(step=name, change="changed", position_before=was,
                                    position_after=position, fields=fields))  # fmt: skip
    for name, (was, old_step) in old_steps.items():
        if name not in new_steps:
            steps.append(StepChange(step=name, change="removed", position_before=was,
                                    position_after=None, fields=_changes_of(old_step, None)))  # fmt: skip
    text = _unified(old, new, labels)
    return Difference(same=not text, pipeline_fields=pipeline_fields, steps=steps, unified=text)


def _changes_of(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[FieldChange]:
    keys = list(dict.fromkeys([*(new or {}), *(old or {})]))
    return [
        change
        for key in keys
        if key != "name"
        for change in _changes(key, (old or {}).get(key), (new or {}).get(key))
    ]


def _changes(key: str, old: Any, new: Any) -> list[FieldChange]:
    """One change per differing leaf: an object field (env, fan_out) key by key, anything else whole
    (an object field going from unset to empty, or back, is one change of the whole field)."""
    if old == new:
        return []
    # An object field set where it was not (or the reverse) lists its keys, as a changed one does.
    if isinstance(old, dict) and new is None and old:
        new = {}
    elif isinstance(new, dict) and old is None and new:
        old = {}
    if isinstance(old, dict) and isinstance(new, dict):
        inner = list(dict.fromkeys([*new, *old]))
        return [c for k in inner for c in _changes(f"{key}.{k}", old.get(k), new.get(k))]
    return [FieldChange(field=key, before=old, after=new)]


def _unified(old: dict[str, Any] | None, new: dict[str, Any], labels: tuple[str, str]) -> str:
    def lines(data: dict[str, Any] | None) -> list[str]:
        return json.dumps(data, indent=2, ensure_ascii=False).splitlines() if data is not None else []

    return "\n".join(
        difflib.unified_diff(lines(old), lines(new), fromfile=labels[0], tofile=labels[1], lineterm="")
    )
