"""Pipeline versions in the database (``pipeline_versions``), and a pipeline as a run takes it: the
current definition or an earlier version, with its number and this instance's private values.

The numbering is per pipeline and never reused: a version is recorded in the init's own transaction
(``record_version``, from ``Store.save_pipeline``), and versions stay when a pipeline is deleted, so a
pipeline initialised again continues from its last number and every run's ``version`` keeps naming
the definition it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ..domain.pipeline import PRIVATE_PLACEHOLDER, Pipeline
from ..domain.versions import ReadDefinition, VersionedPipeline, definition, definition_hash, parse_definition
from ..errors import Conflict, NotFound
from .tables import PipelineRow, PipelineVersionRow, SecretRow, utcnow


class UnknownVersion(NotFound):
    code = "unknown_version"


if TYPE_CHECKING:
    from . import Store


@dataclass(frozen=True)
class VersionRecord:
    pipeline: str
    number: int
    hash: str
    definition: dict[str, Any]
    created_at: datetime
    created_by: str | None

    def pipeline_model(self) -> Pipeline:
        try:
            return parse_definition(self.definition)
        except ValueError as exc:  # only a definition stored before a stricter release could be so
            raise Conflict(
                f"version {self.number} of pipeline {self.pipeline!r} is a definition this release "
                f"cannot read: {str(exc).splitlines()[0][:300]}",
                code="unreadable_version",
            ) from None

    def shown(self) -> dict[str, Any]:
        """The definition as the API shows it (as today's models read it, else as stored)."""
        try:
            return definition(parse_definition(self.definition))
        except ValueError:
            return self.definition


@dataclass(frozen=True)
class SavedVersion:
    """What an init recorded: the pipeline's version now, and whether the init made it."""

    number: int
    hash: str
    new: bool


def _record(row: PipelineVersionRow) -> VersionRecord:
    return VersionRecord(
        row.pipeline, row.number, row.hash, row.definition, row.created_at, row.created_by
    )


async def _latest(s: AsyncSession, pipeline: str) -> PipelineVersionRow | None:
    return (
        await s.scalars(
            select(PipelineVersionRow)
            .where(PipelineVersionRow.pipeline == pipeline)
            .order_by(PipelineVersionRow.number.desc())
            .limit(1)
        )
    ).first()


async def record_version(
    s: AsyncSession, pipeline: Pipeline, by: str | None, read_at: int | None = None
) -> SavedVersion:
    """In the init's transaction: a new version when the definition differs from the latest one
    (compared by hash, the latest re-read by today's models), else the latest's number. ``read_at``
    (the version the caller edited) must be the latest, or the init is a 409."""
    digest = definition_hash(pipeline)
    latest = await _latest(s, pipeline.name)
    if read_at is not None and (latest is None or latest.number != read_at):
        now = "has no version" if latest is None else f"is at version {latest.number}"
        raise Conflict(
            f"pipeline {pipeline.name!r} {now}, not {read_at} as this definition says: it was changed "
            f"since it was read (read it again with GET /pipeline/{pipeline.name}, or leave version out "
            "to replace it whatever it is now)",
            code="version_conflict",
            current=None if latest is None else latest.number,
        )
    if latest is not None and _same(latest, digest):
        return SavedVersion(latest.number, latest.hash, new=False)
    number = latest.number + 1 if latest is not None else 1
    s.add(
        PipelineVersionRow(
            pipeline=pipeline.name,
            number=number,
            hash=digest,
            definition=definition(pipeline),
            created_at=utcnow(),
            created_by=by,
        )
    )
    await s.flush()
    return SavedVersion(number, digest, new=True)


def _same(row: PipelineVersionRow, digest: str) -> bool:
    if row.hash == digest:
        return True
    try:  # a hash written by an older release: what today's models make of its definition decides
        return definition_hash(parse_definition(row.definition)) == digest
    except ValueError:
        return False


class PipelineVersions:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Each pipeline's current definition as last read, with the store's stamp it was read under
        # (``for_run``): every run of it reads it, and it changes only by an init or a delete.
        self._current: dict[str, tuple[int, VersionedPipeline]] = {}

    async def recent(self, pipeline: str, limit: int) -> list[VersionRecord]:
        """The newest ``limit`` versions, newest first (``[]``: none recorded)."""
        async with self.store.session(f"list the versions of pipeline {pipeline}") as s:
            rows = await s.scalars(
                select(PipelineVersionRow)
                .where(PipelineVersionRow.pipeline == pipeline)
                .order_by(PipelineVersionRow.number.desc())
                .limit(limit)
            )
            return [_record(row) for row in rows.all()]

    async def get(self, pipeline: str, number: int) -> VersionRecord | None:
        async with self.store.session(f"read version {number} of pipeline {pipeline}") as s:
            row = await s.get(PipelineVersionRow, (pipeline, number))
            return _record(row) if row is not None else None

    async def current(self, pipelines: list[str] | None = None) -> dict[str, int]:
        """Each existing pipeline's current (latest) version number, by name."""
        async with self.store.session("read the pipelines' current versions") as s:
            query = (
                select(PipelineVersionRow.pipeline, func.max(PipelineVersionRow.number))
                .join(PipelineRow, PipelineRow.name == PipelineVersionRow.pipeline)
                .group_by(PipelineVersionRow.pipeline)
            )
            if pipelines is not None:
                query = query.where(PipelineVersionRow.pipeline.in_(pipelines))
            return {name: int(number) for name, number in (await s.execute(query)).tuples().all()}

    async def read_current(self, name: str) -> ReadDefinition | None:
        """``for_run(name, None)`` with the store's stamp of the definition, taken before the read
        (``Store.definition_stamp``: None while a write of it is under way, when the reader cannot
        know whether it read before or after it). None when the pipeline is not initialised here."""
        stamp = self.store.definition_stamp(name)
        found = await self.for_run(name, None)
        return None if found is None else ReadDefinition(found, stamp)

    def still_current(self, name: str, read: ReadDefinition) -> bool:
        """Whether ``read`` is still the stored definition: no write of it was under way when it was
        read, and none began since. Synchronous: true at the instant it is asked."""
        return read.stamp is not None and self.store.definition_stamp(name) == read.stamp

    async def for_run(self, name: str, number: int | None) -> VersionedPipeline | None:
        """The pipeline a run of ``name`` takes, with this instance's private values: its current
        definition (``number`` None) or version ``number`` (``UnknownVersion`` when it has none such).
        None when the pipeline is not initialised here.

        The current definition is read from the database once per stamp (``Store.definition_stamp``):
        while no init or delete of it began since a read, that read is what is stored (this process
        is the database's only writer), and the next run takes it from memory. One read while a
        write is under way, or with one begun during the read, is not kept."""
        if number is not None:
            return await self._read(name, number)
        stamp = self.store.definition_stamp(name)
        kept = self._current.get(name)
        if stamp is not None and kept is not None and kept[0] == stamp:
            # A copy: a run's definition is its own (a model, not frozen), whatever it does to it.
            return VersionedPipeline(kept[1].pipeline.model_copy(deep=True), kept[1].version)
        self._current.pop(name, None)
        found = await self._read(name, None)
        if found is not None and stamp is not None and self.store.definition_stamp(name) == stamp:
            self._current[name] = (stamp, found)
        return found

    async def _read(self, name: str, number: int | None) -> VersionedPipeline | None:
        """``for_run`` from the database."""
        # A read: it does not wait for the writer's turn (one writer at a time on SQLite).
        # On every run's path: columns rather than ORM objects, and the latest version's number
        # with the definition's row (not the latest version's whole row): two queries in all.
        latest = (
            select(func.max(PipelineVersionRow.number))
            .where(PipelineVersionRow.pipeline == name)
            .scalar_subquery()
        )
        current = select(PipelineRow.description, PipelineRow.steps, PipelineRow.run_timeout, latest).where(
            PipelineRow.name == name
        )

        def read(s: Session) -> VersionedPipeline | None:
            row = s.execute(current).first()
            if row is None:
                return None
            secrets: dict[str, dict[str, str]] = {}
            held = select(SecretRow.step, SecretRow.key, SecretRow.value).where(SecretRow.pipeline == name)
            for step, key, value in s.execute(held).tuples().all():
                secrets.setdefault(step, {})[key] = value
            if number is None:
                description, steps, run_timeout, latest_number = row.tuple()
                data = {"name": name, "description": description, "steps": steps, "run_timeout": run_timeout}
                pipeline = _with_secrets(data, secrets, all_held=True)
                return VersionedPipeline(pipeline, latest_number)
            version = s.get(PipelineVersionRow, (name, number))
            if version is None:
                raise UnknownVersion(
                    f"pipeline {name!r} has no version {number} on this instance "
                    f"(GET /pipeline/{name}/versions lists them)"
                )
            return VersionedPipeline(_with_secrets(version.definition, secrets, all_held=False), number)

        return await self.store.read(f"read pipeline {name} for a run", read)


def _with_secrets(data: dict[str, Any], secrets: dict[str, dict[str, str]], all_held: bool) -> Pipeline:
    """A definition with this instance's private values (by step name). The current definition gets
    every value held for its steps, as it always has; an earlier version only those of the variables
    it marks private itself, so that a value given for a later version never overrides one of its
    plain variables (and one it marks private that has no value now is ``missing_private_values``)."""
    steps = []
    for step in data["steps"]:
        held = secrets.get(step["name"], {})
        if not all_held:
            marked = {k for k, v in (step.get("env") or {}).items() if v == PRIVATE_PLACEHOLDER}
            held = {k: v for k, v in held.items() if k in marked}
        steps.append({**step, "private_env": held or None})
    return Pipeline.model_validate({**data, "steps": steps})
