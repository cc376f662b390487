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
from ..errors import BadRequest, Conflict, NotFound
from ..executors.backends import Backends
from ..federation.registry import Registry
from ..merging.registrations import Registrations
from ..runs.engine import Runner
from ..store import Store
from .stepcheck import check_steps

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
    ) -> None:
        self.backends = backends
        self.settings = settings
        self.store = store
        self.registry = registry
        self.registrations = registrations
        self.datasets = datasets
        self.runner = runner
        self.scheduler = scheduler

    async def init(self, pipeline: Pipeline) -> dict[str, Any]:
        tools = await asyncio.gather(*(self.registry.tool(name) for name in pipeline.tools()))
        datasets = await asyncio.gather(*(self.registry.dataset(name) for name in pipeline.datasets()))
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
            await self.store.save_pipeline(pipeline, before_commit=register)
        except BaseException:
            for name in created:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.datasets.remove_local(name))
            raise

        # A copy of what the steps need, so that runs keep going while etcd is unreachable; only once
        # the init succeeded, so a failed one leaves no local row behind.
        for kind, values in (("tool", tools), ("dataset", datasets)):
            for value in values:
                if value is not None:
                    await self.registrations.remember(kind, value)
        log.info("pipeline %s initialised (%d steps)", pipeline.name, len(pipeline.steps))
        return {
            "name": pipeline.name,
            "description": pipeline.description,
            "steps": pipeline.public_steps(),
            "ok": True,
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
        for schedule_id in schedule_ids:
            self.scheduler.forget(schedule_id)
        log.info("pipeline %s deleted with %d schedule(s)", name, len(schedule_ids))
        return {
            "name": name,
            "deleted": True,
            "unregistered": unregistered,
            "schedules_removed": schedule_ids,
        }
