"""Queries the operator's view needs that no service owns: counting waiting runs, and forgetting old
runs and tick records (``MAO_RUN_RETENTION_DAYS``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select

from ..domain.states import RunStatus
from . import Store
from .backfills import forget_backfills_before
from .tables import AttemptRow, RunRow, RunStepRow, TickRow

WAITING_RUN_STATUSES = (RunStatus.PENDING, RunStatus.QUEUED)
# A run in one of these is kept whatever its age: the engine (or the reconciler) still owns it.
ACTIVE_RUN_STATUSES = (*WAITING_RUN_STATUSES, RunStatus.RUNNING)


async def count_waiting_runs(store: Store) -> int:
    """Runs recorded but not started yet (``mao_queue_depth``)."""
    async with store.reading("count waiting runs") as s:
        return int(await s.scalar(select(func.count()).where(RunRow.status.in_(WAITING_RUN_STATUSES))) or 0)


async def forget_before(store: Store, cutoff: datetime, batch: int = 500) -> tuple[int, int]:
    """Delete ended runs created before ``cutoff`` (with their steps and attempts) and tick records written before
    it, and the backfills none of whose runs is left; returns (runs, ticks) deleted. Runs still pending or running are kept whatever their age.
    Deleted in batches, each its own transaction, so a large first clean-up never holds a long lock."""
    runs = ticks = 0
    while True:
        async with store.session("forget old runs") as s:
            ids = list(
                (
                    await s.scalars(
                        select(RunRow.id)
                        .where(RunRow.created_at < cutoff, RunRow.status.not_in(ACTIVE_RUN_STATUSES))
                        .limit(batch)
                    )
                ).all()
            )
            if ids:
                # Explicitly, not by the foreign key's cascade: SQLite enforces it only per connection.
                await s.execute(delete(AttemptRow).where(AttemptRow.run_id.in_(ids)))
                await s.execute(delete(RunStepRow).where(RunStepRow.run_id.in_(ids)))
                await s.execute(delete(RunRow).where(RunRow.id.in_(ids)))
        runs += len(ids)
        if len(ids) < batch:
            break
    async with store.session("forget old tick records") as s:
        result = await s.execute(delete(TickRow).where(TickRow.recorded_at < cutoff))
        ticks = int(getattr(result, "rowcount", 0) or 0)
    # A backfill goes with its last run (a backfill whose runs are partly kept stays, with those).
    await forget_backfills_before(store, cutoff)
    return runs, ticks


async def existing_runs(store: Store, ids: list[str]) -> set[str]:
    """Which of ``ids`` are runs this database still holds (the step logs of the others can go)."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        async with store.reading("look up runs") as s:
            found.update((await s.scalars(select(RunRow.id).where(RunRow.id.in_(ids[start : start + 500])))).all())
    return found
