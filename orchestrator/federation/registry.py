"""The federation's shared registries of tools, datasets and pipelines, as JSON under ``/mao/v1``.

Reads go straight to etcd (linearizable), so what one instance registers is what every other instance
reads next: no cache to go stale. Every multi-party update (a dataset's node branches, a pipeline's
list of instances) is a compare-and-set, so concurrent instances never lose each other's writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from ..domain.pipeline import Dataset, Pipeline, Tool
from ..errors import Conflict, MalformedEntry, NotFound
from . import keys
from .etcd import DELETE, Etcd, KeyValue

log = logging.getLogger(__name__)
T = TypeVar("T")


def _check_registration(value: Any) -> dict[str, Any]:
    """A pipeline registration as ``register_pipeline`` writes it, or ValueError."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("steps"), list)
        or not all(isinstance(step, dict) for step in value["steps"])
        or not isinstance(value.get("instances", []), list)
    ):
        raise ValueError("not a pipeline registration (an object with a list of steps)")
    return value


class Registry:
    """Reads validate what etcd holds: a malformed value (written by hand, or by a broken client) is
    skipped in lists with one warning per key and version, and is a ``MalformedEntry`` (502, naming
    the key) when read alone, never a 500."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self._warned: set[tuple[str, int]] = set()

    def _load(self, kv: KeyValue, parse: Callable[[Any], T]) -> T:
        try:
            return parse(kv.value)
        except (ValidationError, ValueError, TypeError) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise MalformedEntry(
                f"the registry entry {kv.key} in etcd is malformed ({detail}): register it again "
                "through the API, or delete the key",
                key=kv.key,
            ) from None

    async def _names(self, prefix: str, parse: Callable[[Any], Any]) -> list[str]:
        return [name for name, _ in await self._entries(prefix, parse)]

    async def _entries(self, prefix: str, parse: Callable[[Any], T]) -> list[tuple[str, T]]:
        entries = []
        for kv in await self.etcd.list_prefix(prefix):
            try:
                value = self._load(kv, parse)
            except MalformedEntry as exc:
                if (kv.key, kv.mod_revision) not in self._warned:
                    self._warned.add((kv.key, kv.mod_revision))
                    log.warning("skipping it in lists: %s", exc.message)
                continue
            entries.append((keys.last_segment(kv.key), value))
        return entries

    # -- tools ----------------------------------------------------------------------------------
    async def tool_names(self) -> list[str]:
        return await self._names(keys.TOOLS, Tool.model_validate)

    async def tools(self) -> list[Tool]:
        """Every registered tool (one etcd read)."""
        return [tool for _, tool in await self._entries(keys.TOOLS, Tool.model_validate)]

    async def tool(self, name: str) -> Tool | None:
        kv = await self.etcd.get(keys.tool(name))
        return self._load(kv, Tool.model_validate) if kv else None

    async def put_tool(self, tool: Tool) -> None:
        await self.etcd.put(keys.tool(tool.name), tool.model_dump())

    async def delete_tool(self, name: str) -> None:
        await self._refuse_if_used("tool", name, lambda steps: {s.get("tool") for s in steps})
        if not await self.etcd.delete(keys.tool(name)):
            raise NotFound(f"tool {name!r} is not registered")

    # -- datasets -------------------------------------------------------------------------------
    async def dataset_names(self) -> list[str]:
        return await self._names(keys.DATASETS, _dataset_parser(None))

    async def dataset(self, name: str) -> Dataset | None:
        kv = await self.etcd.get(keys.dataset(name))
        return self._load(kv, _dataset_parser(name)) if kv else None

    async def put_dataset(self, dataset: Dataset) -> Dataset:
        """Register or re-register a dataset. Node branches already registered are kept: they are
        other instances' votes, and a re-registration must not orphan them."""

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            nodes = _nodes_of(current)
            nodes += [n for n in dataset.nodes if n not in nodes]
            return {"master": dataset.master, "nodes": nodes}

        value = await self.etcd.update(keys.dataset(dataset.name), change)
        return Dataset.model_validate({**value, "name": dataset.name})

    async def add_node_branches(self, dataset: str, branches: list[str]) -> None:
        """Add node branches to a registered dataset (``NotFound`` when it is not registered)."""
        await self.etcd.update(keys.dataset(dataset), _nodes_change(dataset, branches))

    async def delete_dataset(self, name: str) -> None:
        await self._refuse_if_used(
            "dataset",
            name,
            lambda steps: {s.get("output_dataset") for s in steps} | {s.get("input_dataset") for s in steps},
        )
        if not await self.etcd.delete(keys.dataset(name)):
            raise NotFound(f"dataset {name!r} is not registered")

    # -- pipelines ------------------------------------------------------------------------------
    async def pipeline(self, name: str) -> dict[str, Any] | None:
        kv = await self.etcd.get(keys.pipeline(name))
        return self._load(kv, _check_registration) if kv else None

    async def pipelines(self) -> dict[str, dict[str, Any]]:
        """Every pipeline registration by name (one etcd read)."""
        return dict(await self._entries(keys.PIPELINES, _check_registration))

    async def pipeline_names(self) -> list[str]:
        return await self._names(keys.PIPELINES, _check_registration)

    async def register_pipeline(
        self, pipeline: Pipeline, instance: str, branches: dict[str, list[str]]
    ) -> dict[str, Any]:
        """Add ``instance`` to the pipeline's registration (creating it) and the node branches its
        steps write (``{dataset: [branch]}``) to their datasets, in one transaction. A pipeline name
        means one thing federation-wide: different steps under a name another instance already runs
        are a 409. Secrets never reach etcd: only the steps' public form does."""
        changes: dict[str, Any] = {keys.pipeline(pipeline.name): _registration_change(pipeline, instance)}
        for dataset, names in branches.items():
            changes[keys.dataset(dataset)] = _nodes_change(dataset, names)
        result = await self.etcd.update_many(changes)
        registration: dict[str, Any] = result[keys.pipeline(pipeline.name)]
        return registration

    async def unregister_pipeline(self, name: str, instance: str) -> bool:
        """Remove ``instance`` from the registration; the registration goes when no instance has the
        pipeline any more. Returns whether the registration was deleted."""
        deleted = False

        def change(current: dict[str, Any] | None) -> Any:
            nonlocal deleted
            if not isinstance(current, dict):
                deleted = False
                return DELETE
            others = [i for i in _instances_of(current) if i != instance]
            deleted = not others
            return {**current, "instances": others} if others else DELETE

        await self.etcd.update(keys.pipeline(name), change)
        return deleted

    async def _refuse_if_used(self, kind: str, name: str, names_in: Any) -> None:
        users = sorted(
            kv.value.get("name", keys.last_segment(kv.key))
            for kv in await self.etcd.list_prefix(keys.PIPELINES)
            if isinstance(kv.value, dict) and name in names_in(kv.value.get("steps", []))
        )
        if users:
            raise Conflict(
                f"{kind} {name!r} is used by pipeline(s) {', '.join(users)}; delete those first",
                code=f"{kind}_in_use",
                pipelines=users,
            )


def _instances_of(current: dict[str, Any]) -> list[str]:
    instances = current.get("instances")
    return [i for i in instances if isinstance(i, str)] if isinstance(instances, list) else []


def _nodes_of(current: Any) -> list[str]:
    """The node branches of a dataset value; a malformed list is replaced, not crashed on."""
    nodes = current.get("nodes") if isinstance(current, dict) else None
    return [n for n in nodes if isinstance(n, str)] if isinstance(nodes, list) else []


def _dataset_parser(name: str | None) -> Callable[[Any], Dataset]:
    def parse(value: Any) -> Dataset:
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return Dataset.model_validate({**value, "name": name or value.get("name") or "x"})

    return parse


def _registration_change(pipeline: Pipeline, instance: str) -> Any:
    steps = pipeline.public_steps()
    now = datetime.now(UTC).isoformat()

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(current, dict):
            return {
                "name": pipeline.name,
                "description": pipeline.description,
                "steps": steps,
                "instances": [instance],
                "registered_by": instance,
                "updated_at": now,
            }
        others = [i for i in _instances_of(current) if i != instance]
        if current.get("steps") != steps and others:
            raise Conflict(
                f"pipeline {pipeline.name!r} is registered in the federation with different steps "
                f"(used by {', '.join(others)}); choose another name or make the steps identical",
                code="pipeline_differs",
            )
        return {
            **current,
            "description": pipeline.description,
            "steps": steps,
            "instances": others + [instance],
            "updated_at": now,
        }

    return change


def _nodes_change(dataset: str, branches: list[str]) -> Any:
    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(current, dict):
            raise NotFound(f"dataset {dataset!r} is not registered", code="missing_dataset")
        nodes = _nodes_of(current)
        return {**current, "nodes": nodes + [b for b in branches if b not in nodes]}

    return change
