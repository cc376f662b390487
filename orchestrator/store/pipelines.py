"""Pipelines in the database: their definitions, private variables (secrets) and registration pins,
saved with a version of the definition (``store.versions``) in one transaction.

``PipelineTables`` is a part of ``Store`` (it runs in the store's transactions: ``session`` writes,
one writer at a time, ``reading`` reads beside them).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.pipeline import Pipeline
from ..errors import Conflict
from .tables import PinRow, PipelineRow, ScheduleRow, SecretRow, utcnow
from .versions import SavedVersion, record_version


class PipelineTables:
    """The pipeline methods of ``Store``."""

    # Per pipeline: writes of its definition begun in this process, and those under way (``Store``
    # sets both up). This process is the database's only writer, as the pins' and admission's
    # memory already assume.
    _definition_writes: Counter[str]
    _definition_writing: Counter[str]

    if TYPE_CHECKING:

        def session(self, doing: str) -> AbstractAsyncContextManager[AsyncSession]: ...

        def reading(self, doing: str) -> AbstractAsyncContextManager[AsyncSession]: ...

    async def save_pipeline(
        self,
        pipeline: Pipeline,
        before_commit: Callable[[], Awaitable[Any]],
        pins: Sequence[tuple[str, str, dict[str, Any]]] = (),
        by: str | None = None,
        read_at: int | None = None,
    ) -> SavedVersion:
        """Insert or replace a pipeline, its secrets and its pins (``(kind, name, value)`` of each
        registration it uses, ``merging.pins``), and record a version of it when its definition
        changed (``store.versions``; ``by``: who). ``before_commit`` runs inside the transaction (it
        registers the pipeline in etcd): if it raises, nothing is stored. Two inits of one pipeline
        at once: the second waits for the first's row (PostgreSQL), or for the database (SQLite);
        one that still meets the other's version is a 409. ``read_at``: the version the caller
        edited; when another is the latest, 409 ``version_conflict`` and nothing is stored."""
        async with (
            self._definition_write(pipeline.name),
            self._version_race(pipeline.name),
            self.session(f"save pipeline {pipeline.name}") as s,
        ):
            row = await s.get(PipelineRow, pipeline.name, with_for_update=True)
            if row is None:
                row = PipelineRow(name=pipeline.name)
                s.add(row)
            row.description = pipeline.description
            row.steps = pipeline.public_steps()
            row.run_timeout = pipeline.run_timeout
            row.updated_at = utcnow()
            await s.execute(delete(SecretRow).where(SecretRow.pipeline == pipeline.name))
            await s.flush()
            for step in pipeline.steps:
                for key, value in (step.private_env or {}).items():
                    s.add(SecretRow(pipeline=pipeline.name, step=step.name, key=key, value=value))
            for kind, name, pinned in pins:
                pin = await s.get(PinRow, (pipeline.name, kind, name))
                if pin is None:
                    s.add(PinRow(scope=pipeline.name, kind=kind, name=name, value=pinned, pinned_at=utcnow()))
                else:
                    pin.value, pin.pinned_at = pinned, utcnow()
            await s.flush()
            saved = await record_version(s, pipeline, by, read_at)
            await before_commit()
            return saved

    def definition_stamp(self, name: str) -> int | None:
        """A stamp of ``name``'s stored definition (its row, private values and versions): two equal
        stamps mean that no write of it (init, delete) began in between, so what was read of it
        between the two is still what is stored. None while a write of it is under way."""
        if self._definition_writing[name]:
            return None
        return self._definition_writes[name]

    @contextlib.asynccontextmanager
    async def _definition_write(self, name: str) -> AsyncIterator[None]:
        """Around a write of a definition, from before its transaction to after its commit (or
        rollback): the stamp is None throughout, and another after it."""
        self._definition_writes[name] += 1
        self._definition_writing[name] += 1
        try:
            yield
        finally:
            self._definition_writing[name] -= 1

    @contextlib.asynccontextmanager
    async def _version_race(self, name: str) -> AsyncIterator[None]:
        try:
            yield
        except IntegrityError as exc:
            raise Conflict(
                f"pipeline {name!r} was initialised by another request at the same moment; "
                "send the init again",
                code="concurrent_init",
            ) from exc

    async def get_pipeline(self, name: str, with_secrets: bool = False) -> Pipeline | None:
        async with self.reading(f"read pipeline {name}") as s:
            row = await s.get(PipelineRow, name)
            if row is None:
                return None
            secrets = await self._secrets(s, [name]) if with_secrets else {}
            return _pipeline(row, secrets.get(name, {}))

    async def list_pipelines(self) -> list[Pipeline]:
        async with self.reading("list pipelines") as s:
            rows = (await s.scalars(select(PipelineRow).order_by(PipelineRow.name))).all()
            return [_pipeline(row, {}) for row in rows]

    async def delete_pipeline(self, name: str, before_commit: Callable[[], Awaitable[Any]]) -> list[str]:
        """Delete a pipeline with its secrets and schedules (runs stay); returns the schedule ids."""
        async with self._definition_write(name), self.session(f"delete pipeline {name}") as s:
            schedule_ids = list(
                (await s.scalars(select(ScheduleRow.id).where(ScheduleRow.pipeline == name))).all()
            )
            await s.execute(delete(ScheduleRow).where(ScheduleRow.pipeline == name))
            await s.execute(delete(SecretRow).where(SecretRow.pipeline == name))
            await s.execute(delete(PinRow).where(PinRow.scope == name))
            await s.execute(delete(PipelineRow).where(PipelineRow.name == name))
            await before_commit()
            return schedule_ids

    async def _secrets(self, s: AsyncSession, names: list[str]) -> dict[str, dict[str, dict[str, str]]]:
        result: dict[str, dict[str, dict[str, str]]] = {}
        for row in (await s.scalars(select(SecretRow).where(SecretRow.pipeline.in_(names)))).all():
            result.setdefault(row.pipeline, {}).setdefault(row.step, {})[row.key] = row.value
        return result


def _pipeline(row: PipelineRow, secrets: dict[str, dict[str, str]]) -> Pipeline:
    steps = [{**step, "private_env": secrets.get(step["name"]) or None} for step in row.steps]
    return Pipeline.model_validate(
        {"name": row.name, "description": row.description, "steps": steps, "run_timeout": row.run_timeout}
    )
