"""Initialising and deleting pipelines on this instance.

Init is all or nothing: it checks the registries, prepares every dataset (clone, ``ground-truth``),
and only then writes, in one database transaction that commits only after the etcd transaction
(registration + node branches) succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..datasets import Datasets
from ..domain.pipeline import Pipeline, node_branch
from ..errors import BadRequest, Conflict, MaoError, NotFound
from ..executors.backends import Backends
from ..federation.registry import Registry
from ..merging.pins import Pins
from ..merging.registrations import Registrations
from ..runs.engine import Runner
from ..store import Store
from .stepcheck import check_steps
from .versions import VersionHistory

if TYPE_CHECKING:
    from ..scheduling.cron import Scheduler

log = logging.getLogger(__name__)


class PipelineService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        registrations: Registrations,
        datasets: Datasets,
        runner: Runner,
        scheduler: Scheduler,
        backends: Backends,
        pins: Pins,
    ) -> None:
        self.backends = backends
        self.pins = pins
        self.settings = settings
        self.store = store
        self.registry = registry
        self.registrations = registrations
        self.datasets = datasets
        self.runner = runner
        self.scheduler = scheduler
        self.versions = VersionHistory(store)

    async def init(self, pipeline: Pipeline, by: str | None = None, read_at: int | None = None) -> dict[str, Any]:
        """Check, prepare and store ``pipeline``; a changed definition is a new version (``by``:
        who initialised it). The answer says which version the pipeline is now and if it is new.
        ``read_at``: the version the caller read and edited; another one now is a 409."""
        tool_entries = await asyncio.gather(*(self.registry.tool_entry(name) for name in pipeline.tools()))
        dataset_entries = await asyncio.gather(
            *(self.registry.dataset_entry(name) for name in pipeline.datasets())
        )
        tools = [entry.value if entry else None for entry in tool_entries]
        datasets = [entry.value if entry else None for entry in dataset_entries]
        missing_tools = [name for name, tool in zip(pipeline.tools(), tools, strict=True) if tool is None]
        missing_datasets = [
            name for name, ds in zip(pipeline.datasets(), datasets, strict=True) if ds is None
        ]
        if missing_tools or missing_datasets:
            parts = []
            if missing_tools:
                parts.append("tools not registered: " + ", ".join(missing_tools))
            if missing_datasets:
                parts.append("datasets not registered: " + ", ".join(missing_datasets))
            raise BadRequest(
                f"pipeline {pipeline.name!r} cannot be initialised: " + "; ".join(parts),
                code="missing_registrations",
                ok=False,
                steps=[],
                errors={"missing_tools": missing_tools, "missing_datasets": missing_datasets},
            )
        if missing := pipeline.missing_private_values():
            raise BadRequest(
                "private variables need a value on this instance (give them in the step's private_env): "
                + ", ".join(missing),
                code="missing_private_values",
                missing=missing,
            )

        if unknown := self.runner.pools.unknown([step.pool for step in pipeline.steps]):
            raise BadRequest(
                f"pipeline {pipeline.name!r} names pool(s) not configured on this instance: "
                f"{', '.join(unknown)} (MAO_POOLS has {', '.join(self.settings.pools) or 'none'})",
                code="unknown_pool",
                pools=unknown,
            )
        # Every step as its backend will check it at run time: a step that can never run is a 400 now.
        known = {tool.name: tool for tool in tools if tool is not None}
        await check_steps(pipeline, known, self.settings, self.backends)

        branches: dict[str, list[str]] = {}
        for step in pipeline.steps:
            branches.setdefault(step.output_dataset, []).append(
                node_branch(step.name, self.settings.instance_name)
            )

        async def register() -> None:
            await self.registry.register_pipeline(pipeline, self.settings.instance_name, branches)

        # Git work first: a dataset that cannot be cloned stops the init before anything is written.
        # A local repository this init created is removed again when the init fails.
        created: list[str] = []
        try:
            for dataset in (ds for ds in datasets if ds is not None):
                if not await self.datasets.has_local(dataset.name):
                    created.append(dataset.name)
                await self.datasets.sync(dataset.name, dataset.master)
            # Initialising is accepting: what the registrations say now is what its runs may use.
            found_tools = [entry for entry in tool_entries if entry is not None]
            found_datasets = [entry for entry in dataset_entries if entry is not None]
            pins = self.pins.snapshot("tool", found_tools) + self.pins.snapshot("dataset", found_datasets)
            saved = await self.store.save_pipeline(
                pipeline, before_commit=register, pins=pins, by=by, read_at=read_at
            )
        except BaseException:
            for name in created:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.datasets.remove_local(name))
            raise
        finally:
            self.pins.forget(pipeline.name)

        # A copy of what the steps need, so that runs keep going while etcd is unreachable; only once
        # the init succeeded, so a failed one leaves no local row behind.
        for kind, entries in (("tool", found_tools), ("dataset", found_datasets)):
            for entry in entries:
                await self.registrations.remember(kind, entry)
        # A step that lost its strategy (or was removed) loses its watcher's state; the others keep
        # theirs (domain.strategy.fit keeps the health of the tools still in a changed chain).
        await self._forget_strategies(pipeline.name, frozenset(s.name for s in pipeline.steps if s.strategy))
        log.info(
            "pipeline %s initialised (%d steps): version %d%s",
            pipeline.name,
            len(pipeline.steps),
            saved.number,
            "" if saved.new else " (unchanged)",
        )
        unowned = sorted(f"{kind} {name}" for kind, name, pin in pins if pin.get("owner") is None)
        return {
            "name": pipeline.name,
            "description": pipeline.description,
            "steps": pipeline.public_steps(),
            "ok": True,
            "version": saved.number,
            "new_version": saved.new,
            "hash": saved.hash,
            "pinned": [{"kind": kind, "name": name, **pin} for kind, name, pin in pins],
            **(
                {
                    "warnings": [
                        f"{', '.join(unowned)}: registered before registrations had owners, so anyone "
                        "in the federation may change it; its operator should claim it (maoctl registry "
                        "claim). Changes are caught all the same: runs stop until you accept them."
                    ]
                }
                if unowned
                else {}
            ),
        }

    async def _forget_strategies(self, name: str, keep: frozenset[str] = frozenset()) -> None:
        try:
            await self.runner.strategies.forget(name, keep)
        except MaoError as exc:  # stale rows only show in /metrics until the next init or delete
            log.warning("pipeline %s: its steps' old strategy states were not removed: %s", name, exc.message)

    async def accept(self, name: str, dry_run: bool = False) -> dict[str, Any]:
        """Accept the registrations the pipeline uses as they are now (``pins``)."""
        pipeline = await self.store.get_pipeline(name)
        if pipeline is None:
            raise NotFound(f"pipeline {name!r} is not initialised on this instance")
        changes = await self.pins.accept(pipeline, dry_run=dry_run)
        return {
            "name": name,
            "dry_run": dry_run,
            "accepted": [] if dry_run else [c.public() for c in changes],
            "changes": [c.public() for c in changes],
        }

    async def delete(self, name: str) -> dict[str, Any]:
        if await self.store.get_pipeline(name) is None:
            raise NotFound(f"pipeline {name!r} is not initialised on this instance")
        if run_id := self.runner.active_run(name):
            raise Conflict(
                f"pipeline {name!r} has run {run_id} running or queued; delete it when the run has ended "
                "(a queued run can be cancelled: POST /runs/{id}/cancel)"
            )
        unregistered = False

        async def unregister() -> None:
            nonlocal unregistered
            unregistered = await self.registry.unregister_pipeline(name, self.settings.instance_name)

        schedule_ids = await self.store.delete_pipeline(name, before_commit=unregister)
        self.pins.forget(name)
        await self._forget_strategies(name)
        for schedule_id in schedule_ids:
            self.scheduler.forget(schedule_id)
        log.info("pipeline %s deleted with %d schedule(s)", name, len(schedule_ids))
        return {
            "name": name,
            "deleted": True,
            "unregistered": unregistered,
            "schedules_removed": schedule_ids,
        }
