"""The federation's shared registries of tools, datasets and pipelines, as JSON under ``/mao/v1``.

Reads go straight to etcd (linearizable), so what one instance registers is what every other instance
reads next: no cache to go stale. Every multi-party update (a dataset's node branches, a pipeline's
list of instances) is a compare-and-set, so concurrent instances never lose each other's writes.
Every registration has an owner, and only its owner changes it (``ownership``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from executor.wire.names import name_problem

from ..domain.pipeline import Dataset, Pipeline, Tool
from ..errors import Conflict, MalformedEntry, NotFound
from . import keys, seals
from .answers import KeyValue
from .etcd import DELETE, Etcd
from .ownership import (
    SHARED,
    Kind,
    Provenance,
    may_change,
    not_owner,
    owned,
    provenance,
    without_ownership,
)
from .read_batch import ReadBatch
from .registry_entries import (
    check_registration,
    dataset_parser,
    instances_of,
    malformed,
    nodes_change,
    nodes_of,
    parser_of,
)
from .seals import Sealer
from .values import warn_once

log = logging.getLogger(__name__)
T = TypeVar("T")
_CHECKED_KEEP = 4096

PREFIXES = {Kind.TOOL: keys.TOOLS, Kind.DATASET: keys.DATASETS, Kind.PIPELINE: keys.PIPELINES}


def key_of(kind: Kind, name: str) -> str:
    return PREFIXES[kind] + name


def _still_holds(verdict: Provenance | str) -> bool:
    """Whether a verdict kept from an earlier read still stands: a seal passes only while the
    certificate that signed it is valid (``seals``), so a kept pass ends with it."""
    if isinstance(verdict, str) or verdict.valid_until is None:
        return True
    return seals.now() <= verdict.valid_until


@dataclass(frozen=True)
class Registered(Generic[T]):
    """A registration as read: what it says, who owns it, and the etcd version it was read at."""

    value: T
    provenance: Provenance
    mod_revision: int


class Registry:
    """Reads validate what etcd holds: a malformed value (written by hand, by a broken client, or by a
    member past its own API so that its seal does not check out) is skipped in lists with one warning
    per key and version, and is a ``MalformedEntry`` (502, naming the key) when read alone, never a
    500."""

    def __init__(self, etcd: Etcd, sealer: Sealer | None = None, instance: str = "") -> None:
        self.etcd = etcd
        # Reads asked side by side (a run's check, a step's registrations) share one round trip.
        self._reads = ReadBatch(etcd)
        self.sealer = sealer or Sealer(instance or "unnamed", None)
        self.instance = instance or self.sealer.instance
        # (key, mod_revision) -> the value read there and its provenance or why not: a seal is
        # verified once per version. The value is kept too: the verdict is only ever the same value's
        # (an etcd restored from a snapshot writes other values at revisions it had handed out).
        self._checked: OrderedDict[tuple[str, int], tuple[Any, Provenance | str]] = OrderedDict()

    # -- reading --------------------------------------------------------------------------------
    def _provenance(self, kind: Kind, kv: KeyValue) -> Provenance | str:
        marker = (kv.key, kv.mod_revision)
        kept = self._checked.get(marker) if kv.mod_revision else None
        if kept is not None and kept[0] == kv.value and _still_holds(kept[1]):
            return kept[1]
        found = provenance(kv.value, kind, self.sealer)
        if isinstance(found, Provenance) and isinstance(kv.value, dict):
            named = kv.value.get("name", keys.last_segment(kv.key))
            if named != keys.last_segment(kv.key):
                found = f"its name field says {str(named)[:80]!r}, its key {keys.last_segment(kv.key)!r}"
        self._checked[marker] = (kv.value, found)
        if len(self._checked) > _CHECKED_KEEP:
            self._checked.popitem(last=False)
        return found

    def _load(self, kind: Kind, kv: KeyValue, parse: Callable[[Any], T]) -> Registered[T]:
        if kv.problem:
            raise malformed(kv.key, kv.problem)
        found = self._provenance(kind, kv)
        if isinstance(found, str):
            raise malformed(kv.key, found)
        try:
            value = parse(kv.value)
        except (ValidationError, ValueError, TypeError) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise malformed(kv.key, detail) from None
        return Registered(value, found, kv.mod_revision)

    async def _read(self, kind: Kind, name: str, parse: Callable[[Any], T]) -> Registered[T] | None:
        kv = await self._reads.get(key_of(kind, name))
        return self._load(kind, kv, parse) if kv else None

    async def _names(self, kind: Kind, parse: Callable[[Any], Any]) -> list[str]:
        return [name for name, _ in await self._entries(kind, parse)]

    async def _entries(self, kind: Kind, parse: Callable[[Any], T]) -> list[tuple[str, T]]:
        """Every valid registration of ``kind`` by name; the others are skipped, said once."""
        entries = []
        for kv in await self.etcd.list_prefix(PREFIXES[kind]):
            name = keys.last_segment(kv.key)
            if kv.key != key_of(kind, name) or name_problem(name, f"{kind} name") is not None:
                warn_once(kv.key, kv.mod_revision, f"not a {kind} name")
                continue
            try:
                entry = self._load(kind, kv, parse)
            except MalformedEntry as exc:
                warn_once(kv.key, kv.mod_revision, exc.message)
                continue
            entries.append((name, entry.value))
        return entries

    # -- tools ----------------------------------------------------------------------------------
    async def tool_names(self) -> list[str]:
        return await self._names(Kind.TOOL, Tool.model_validate)

    async def tool_entry(self, name: str) -> Registered[Tool] | None:
        return await self._read(Kind.TOOL, name, Tool.model_validate)

    async def tools(self) -> list[Tool]:
        """Every registered tool (one etcd read)."""
        return [tool for _, tool in await self._entries(Kind.TOOL, Tool.model_validate)]

    async def tool(self, name: str) -> Tool | None:
        entry = await self.tool_entry(name)
        return entry.value if entry else None

    async def put_tool(self, tool: Tool) -> None:
        """Register or change a tool; only its owner may change it (``NotOwner``)."""
        await self._put(Kind.TOOL, tool.name, lambda _current: tool.model_dump())

    async def delete_tool(self, name: str) -> None:
        await self._refuse_if_used("tool", name, lambda steps: {s.get("tool") for s in steps})
        await self._delete(Kind.TOOL, name)

    # -- datasets -------------------------------------------------------------------------------
    async def dataset_names(self) -> list[str]:
        return await self._names(Kind.DATASET, dataset_parser(None))

    async def dataset_entry(self, name: str) -> Registered[Dataset] | None:
        return await self._read(Kind.DATASET, name, dataset_parser(name))

    async def dataset(self, name: str) -> Dataset | None:
        entry = await self.dataset_entry(name)
        return entry.value if entry else None

    async def put_dataset(self, dataset: Dataset) -> Dataset:
        """Register or re-register a dataset (its owner only). Node branches already registered are
        kept: they are other instances' votes, and a re-registration must not orphan them."""

        def fields(current: dict[str, Any] | None) -> dict[str, Any]:
            nodes = nodes_of(current)
            nodes += [n for n in dataset.nodes if n not in nodes]
            return {"name": dataset.name, "master": dataset.master, "nodes": nodes}

        value = await self._put(Kind.DATASET, dataset.name, fields)
        return Dataset.model_validate({**value, "name": dataset.name})

    async def add_node_branches(self, dataset: str, branches: list[str]) -> None:
        """Add node branches to a registered dataset (``NotFound`` when it is not registered)."""
        await self.etcd.update(keys.dataset(dataset), nodes_change(dataset, branches))

    async def delete_dataset(self, name: str) -> None:
        await self._refuse_if_used(
            "dataset",
            name,
            lambda steps: {s.get("output_dataset") for s in steps} | {s.get("input_dataset") for s in steps},
        )
        await self._delete(Kind.DATASET, name)

    # -- pipelines ------------------------------------------------------------------------------
    async def pipeline_entry(self, name: str) -> Registered[dict[str, Any]] | None:
        return await self._read(Kind.PIPELINE, name, check_registration)

    async def pipeline(self, name: str) -> dict[str, Any] | None:
        entry = await self.pipeline_entry(name)
        return entry.value if entry else None

    async def pipelines(self) -> dict[str, dict[str, Any]]:
        """Every pipeline registration by name (one etcd read)."""
        return dict(await self._entries(Kind.PIPELINE, check_registration))

    async def pipeline_names(self) -> list[str]:
        return await self._names(Kind.PIPELINE, check_registration)

    async def register_pipeline(
        self, pipeline: Pipeline, instance: str, branches: dict[str, list[str]]
    ) -> dict[str, Any]:
        """Add ``instance`` to the pipeline's registration (creating it) and the node branches its
        steps write (``{dataset: [branch]}``) to their datasets, in one transaction. A pipeline name
        means one thing federation-wide: different steps under a name another instance owns are a
        403, under a name another instance already runs a 409. Secrets never reach etcd: only the
        steps' public form does."""
        changes: dict[str, Any] = {
            keys.pipeline(pipeline.name): self._registration_change(pipeline, instance)
        }
        for dataset, names in branches.items():
            changes[keys.dataset(dataset)] = nodes_change(dataset, names)
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
            others = [i for i in instances_of(current) if i != instance]
            deleted = not others
            return {**current, "instances": others} if others else DELETE

        await self.etcd.update(keys.pipeline(name), change)
        return deleted

    def _registration_change(self, pipeline: Pipeline, instance: str) -> Callable[[Any], Any]:
        steps = pipeline.public_steps()
        now = datetime.now(UTC).isoformat()
        key = keys.pipeline(pipeline.name)

        def change(current: Any) -> dict[str, Any]:
            ownership = self._current_provenance(Kind.PIPELINE, key, current)
            if not isinstance(current, dict) or isinstance(ownership, str):
                fields = {
                    "name": pipeline.name,
                    "description": pipeline.description,
                    "steps": steps,
                    "registered_by": instance,
                }
                value = owned(fields, Kind.PIPELINE, instance, 1, self.sealer)
                return {**value, "instances": [instance], "updated_at": now}
            others = [i for i in instances_of(current) if i != instance]
            if current.get("steps") == steps:
                # Joining: only the shared fields change, the owner's seal stays as it is.
                return {**current, "instances": others + [instance], "updated_at": now}
            if others:
                raise Conflict(
                    f"pipeline {pipeline.name!r} is registered in the federation with different steps "
                    f"(used by {', '.join(others)}); choose another name or make the steps identical",
                    code="pipeline_differs",
                )
            if ownership.owner is not None and ownership.owner != instance:
                raise not_owner(Kind.PIPELINE, pipeline.name, ownership.owner)
            fields = {
                **without_ownership(current),
                "description": pipeline.description,
                "steps": steps,
            }
            value = owned(fields, Kind.PIPELINE, instance, ownership.revision + 1, self.sealer)
            return {**value, "instances": others + [instance], "updated_at": now}

        return change

    # -- ownership ------------------------------------------------------------------------------
    async def owner(self, kind: Kind, name: str) -> Provenance:
        """Who owns a registration (``NotFound`` when there is none; 502 when it does not check out)."""
        entry = await self._read(kind, name, parser_of(kind, name))
        if entry is None:
            raise NotFound(f"{kind} {name!r} is not registered")
        return entry.provenance

    async def hand_over(self, kind: Kind, name: str, new_owner: str) -> Provenance:
        """Make ``new_owner`` the owner: the owner hands over, or this instance claims (``new_owner``
        is itself) a registration nobody owns. Sealed by this instance either way."""
        key = key_of(kind, name)

        def change(current: Any) -> Any:
            if current is None:
                raise NotFound(f"{kind} {name!r} is not registered")
            ownership = self._current_provenance(kind, key, current)
            if isinstance(ownership, str):
                raise malformed(key, ownership)
            if ownership.owner is None and new_owner != self.instance:
                raise not_owner(kind, name, None)
            if ownership.owner is not None and ownership.owner != self.instance:
                raise not_owner(kind, name, ownership.owner)
            if ownership.owner == new_owner:
                return current  # nothing to do; not even a new revision
            shared = {k: current[k] for k in SHARED[kind] if k in current}
            value = owned(without_ownership(current), kind, new_owner, ownership.revision + 1, self.sealer)
            return {**value, **shared}

        await self.etcd.update(key, change)
        return await self.owner(kind, name)

    def _current_provenance(self, kind: Kind, key: str, current: Any) -> Provenance | str:
        return provenance(current, kind, self.sealer) if current is not None else "absent"

    async def _put(
        self, kind: Kind, name: str, fields: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> dict[str, Any]:
        key = key_of(kind, name)

        def change(current: Any) -> dict[str, Any]:
            ownership = self._current_provenance(kind, key, current) if current is not None else None
            revision = may_change(ownership, self.instance, kind, name)
            previous = current if isinstance(current, dict) else None
            return owned(fields(previous), kind, self.instance, revision, self.sealer)

        written: dict[str, Any] = await self.etcd.update(key, change)
        return written

    async def _delete(self, kind: Kind, name: str) -> None:
        key = key_of(kind, name)
        for _ in range(20):
            kv = await self.etcd.get(key)
            if kv is None:
                raise NotFound(f"{kind} {name!r} is not registered")
            if kv.problem is None:
                ownership = provenance(kv.value, kind, self.sealer)
                if isinstance(ownership, Provenance) and ownership.owner != self.instance:
                    raise not_owner(kind, name, ownership.owner)
            if await self.etcd.delete_if(key, kv.mod_revision):
                return
        raise Conflict(f"{kind} {name!r} kept changing while it was being deleted; try again")

    async def _refuse_if_used(self, kind: str, name: str, names_in: Any) -> None:
        users = sorted(
            str(kv.value.get("name", keys.last_segment(kv.key)))
            for kv in await self.etcd.list_prefix(keys.PIPELINES)
            if isinstance(kv.value, dict)
            and isinstance(kv.value.get("steps"), list)
            and name in names_in([s for s in kv.value["steps"] if isinstance(s, dict)])
        )
        if users:
            raise Conflict(
                f"{kind} {name!r} is used by pipeline(s) {', '.join(users)}; delete those first",
                code=f"{kind}_in_use",
                pipelines=users,
            )
