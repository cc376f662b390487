"""What lets an instance keep running its pipelines while etcd is unreachable, kept in SQL.

- ``RegistryCache``: the last registration of each tool and dataset read from etcd. The runner reads
  etcd first and falls back to this copy only when etcd does not answer.
- ``PendingMerges``: ground-truth merges that waited for the federation: one row per dataset and
  node branch, settled (step records updated, row removed) in one transaction once merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..domain.states import ACTIVE_RUN, IllegalTransition, MergeState, RunStatus, StepStatus
from . import Store
from .run_changes import RunChange, StepChange, StepFacts, run_transition, step_transition
from .tables import PendingMergeRow, RegistryCacheRow, RunRow, RunStepRow, utcnow


class RegistryCache:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def put(self, kind: str, name: str, value: dict[str, Any]) -> None:
        """Insert or replace, in one statement: two inits (or runs) reading the same new tool at
        once both write it, and neither may fail on the other's row (a read-then-insert did)."""
        async with self.store.session(f"cache the registration of {kind} {name}") as s:
            insert = sqlite_insert if self.store.url.startswith("sqlite") else postgresql_insert
            statement = insert(RegistryCacheRow).values(kind=kind, name=name, value=value, cached_at=utcnow())
            await s.execute(
                statement.on_conflict_do_update(
                    index_elements=["kind", "name"],
                    set_={"value": statement.excluded.value, "cached_at": statement.excluded.cached_at},
                )
            )

    async def get(self, kind: str, name: str) -> tuple[dict[str, Any], str] | None:
        """The cached value and when it was read from etcd, or None."""
        async with self.store.reading(f"read the cached registration of {kind} {name}") as s:
            row = await s.get(RegistryCacheRow, (kind, name))
            return (dict(row.value), row.cached_at.isoformat()) if row else None

    async def drop(self, kind: str, name: str) -> None:
        async with self.store.session(f"forget the cached registration of {kind} {name}") as s:
            await s.execute(
                delete(RegistryCacheRow).where(RegistryCacheRow.kind == kind, RegistryCacheRow.name == name)
            )


class PendingMerges:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def queue(
        self,
        dataset: str,
        branch: str,
        master: str,
        commit: str,
        message: str,
        trailers: Mapping[str, str],
        step: tuple[str, str] | None,
    ) -> int:
        """Queue (or move forward) the merge of ``branch``; returns how many steps it now covers."""
        async with self.store.session(f"queue the merge of {branch} into {dataset}") as s:
            row = await s.get(PendingMergeRow, (dataset, branch))
            if row is None:
                row = PendingMergeRow(dataset=dataset, branch=branch, steps=[], attempts=0)
                s.add(row)
            row.master, row.commit, row.message, row.trailers = master, commit, message, dict(trailers)
            if step is not None and list(step) not in row.steps:
                row.steps = [*row.steps, list(step)]
            row.queued_at = utcnow()
            return len(row.steps)

    async def all(self) -> list[dict[str, Any]]:
        async with self.store.reading("list queued merges") as s:
            rows = (await s.scalars(select(PendingMergeRow).order_by(PendingMergeRow.queued_at))).all()
            return [_row(r) for r in rows]

    async def get(self, dataset: str, branch: str) -> dict[str, Any] | None:
        def read(s: Session) -> dict[str, Any] | None:
            row = s.get(PendingMergeRow, (dataset, branch))
            return _row(row) if row else None

        return await self.store.read(f"read the queued merge of {branch}", read)

    async def failed_attempt(self, dataset: str, branch: str, error: str) -> None:
        async with self.store.session(f"record a failed merge of {branch}") as s:
            await s.execute(
                update(PendingMergeRow)
                .where(PendingMergeRow.dataset == dataset, PendingMergeRow.branch == branch)
                .values(attempts=PendingMergeRow.attempts + 1, last_error=error[:2000])
            )

    async def settle(
        self,
        dataset: str,
        branch: str,
        commit: str,
        steps: list[list[Any]],
        merge_commit: str | None,
        conflicts: list[str] | None = None,
        error: str | None = None,
    ) -> int:
        """Record the merge of ``commit`` on ``steps`` and take them off the queue, in one transaction.

        With ``conflicts`` the steps become ``conflict`` and their runs ``failed``. The row goes only if
        no later run moved it to a newer commit meanwhile; otherwise just these steps leave it.
        Returns how many of the steps belong to runs that had already ended (their conflict was not
        in the run's record when the run engine counted it)."""

        def settle(s: Session) -> int:
            ended = 0
            for run_id, step in steps:
                status = s.scalar(select(RunRow.status).where(RunRow.id == run_id))
                ended += status is not None and status not in ACTIVE_RUN
                if not conflicts:  # no status change: the step's record learns where it merged
                    s.execute(
                        update(RunStepRow)
                        .where(RunStepRow.run_id == run_id, RunStepRow.name == step)
                        .values(merge_state=MergeState.MERGED, merge_commit=merge_commit)
                    )
                    continue
                _conflict(s, run_id, step, conflicts, error)
            row = s.get(PendingMergeRow, (dataset, branch))
            if row is None:
                return ended
            if row.commit == commit:
                s.delete(row)
            else:
                row.steps = [st for st in row.steps if st not in steps]
            return ended

        return await self.store.write(f"settle the queued merge of {branch}", settle)


def _conflict(s: Session, run_id: str, step: str, conflicts: list[str], error: str | None) -> None:
    """A queued merge that conflicts: its step becomes ``conflict`` and its run ``failed``, each
    through its guarded transition (the statuses it may come from are in the ``WHERE``)."""
    facts = StepFacts(merge_state=MergeState.CONFLICT, conflicts=conflicts, error=error)
    try:
        step_transition(s, StepChange(run_id, step, StepStatus.CONFLICT, facts))
    except IllegalTransition:
        # A legitimate no-op for the status: the step ended otherwise while its merge waited (its
        # run was cancelled, say: the final statuses stay final) or its record is gone. Its record
        # still learns how the merge went; its status and error stay its own.
        s.execute(
            update(RunStepRow)
            .where(RunStepRow.run_id == run_id, RunStepRow.name == step)
            .values(merge_state=MergeState.CONFLICT, conflicts=conflicts)
        )
    try:
        run_transition(s, RunChange(run_id, RunStatus.FAILED, error=error))
    except IllegalTransition:
        # A legitimate no-op: the run already ended failed or cancelled (both final; an earlier
        # conflict of another of its steps, say), or its record is gone.
        pass


def _row(row: PendingMergeRow) -> dict[str, Any]:
    return {
        "dataset": row.dataset,
        "branch": row.branch,
        "master": row.master,
        "commit": row.commit,
        "message": row.message,
        "trailers": dict(row.trailers),
        "steps": [list(st) for st in row.steps],
        "queued_at": row.queued_at.isoformat(),
        "attempts": row.attempts,
        "last_error": row.last_error,
    }
