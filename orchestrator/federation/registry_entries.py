"""The registry's etcd values as data: how a tool, dataset or pipeline registration is parsed, and the
pure changes a compare-and-set applies to a dataset's node branches.

A registration that does not parse is ``malformed`` (502, naming the key), never a 500. Changes are
pure functions of the current value (``Etcd.update`` may call them several times).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..domain.pipeline import Dataset, Tool
from ..errors import MalformedEntry, NotFound
from .ownership import Kind
from .seals import SEAL_FIELDS


def check_registration(value: Any) -> dict[str, Any]:
    """A pipeline registration as ``register_pipeline`` writes it, or ValueError."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("steps"), list)
        or not all(isinstance(step, dict) for step in value["steps"])
        or not isinstance(value.get("instances", []), list)
    ):
        raise ValueError("not a pipeline registration (an object with a list of steps)")
    return {k: v for k, v in value.items() if k not in SEAL_FIELDS}


def malformed(key: str, detail: str) -> MalformedEntry:
    """The 502 for the registry entry ``key`` that does not check out, saying why."""
    return MalformedEntry(
        f"the registry entry {key} in etcd is malformed ({detail}): its owner can register it again "
        "through the API, or delete the key",
        key=key,
    )


def parser_of(kind: Kind, name: str) -> Callable[[Any], Any]:
    """How a registration of ``kind`` named ``name`` is read."""
    if kind is Kind.TOOL:
        return Tool.model_validate
    if kind is Kind.DATASET:
        return dataset_parser(name)
    return check_registration


def instances_of(current: Any) -> list[str]:
    """The instances that run a pipeline registration."""
    return _strings(current, "instances")


def nodes_of(current: Any) -> list[str]:
    """The node branches of a dataset value."""
    return _strings(current, "nodes")


def _strings(current: Any, field: str) -> list[str]:
    """The strings listed under ``field`` of a value; a malformed list is replaced, not crashed on."""
    listed = current.get(field) if isinstance(current, dict) else None
    return [item for item in listed if isinstance(item, str)] if isinstance(listed, list) else []


def dataset_parser(name: str | None) -> Callable[[Any], Dataset]:
    """How a dataset registration is read; ``name`` (when known) is the one its key says."""
    def parse(value: Any) -> Dataset:
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return Dataset.model_validate({**value, "name": name or value.get("name") or "x"})

    return parse


def nodes_change(dataset: str, branches: list[str]) -> Any:
    """The change that adds ``branches`` to a registered dataset's node branches (``NotFound`` without one)."""
    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(current, dict):
            raise NotFound(f"dataset {dataset!r} is not registered", code="missing_dataset")
        nodes = nodes_of(current)
        return {**current, "nodes": nodes + [b for b in branches if b not in nodes]}

    return change
