"""Stand-ins for the run engine's registrations and pins in unit tests (no etcd): every dataset and
tool is registered, and nothing changed since the pipeline's pins."""

from __future__ import annotations

from typing import Any

from orchestrator.domain.pipeline import Dataset, Pipeline, Tool

IMAGE = "busybox:latest"


class Registrations:
    async def dataset(self, name: str) -> Dataset:
        return Dataset(name=name, master="/nowhere.git")

    async def tool(self, name: str) -> Tool:
        return Tool(name=name, image=IMAGE)


class Pins:
    def __init__(self) -> None:
        self.registrations = Registrations()

    async def dataset(self, scope: str, name: str) -> Dataset:
        return await self.registrations.dataset(name)

    async def tool(self, scope: str, name: str) -> Tool:
        return await self.registrations.tool(name)

    async def changes(self, pipeline: Pipeline) -> list[Any]:
        return []
