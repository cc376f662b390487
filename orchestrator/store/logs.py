"""The attempt rows ``GET /runs/{id}/log`` picks a log by (see ``orchestrator/runs/step_logs.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from . import Store
from .tables import AttemptRow


@dataclass(frozen=True)
class AttemptLog:
    attempt: int
    shard: int | None
    status: str
    container: str | None


async def step_attempts(store: Store, run_id: str, step: str) -> list[AttemptLog]:
    """The attempts of ``step`` in run ``run_id``, in the order they started."""
    async with store.reading(f"read the attempts of step {step}") as s:
        rows = (
            await s.scalars(
                select(AttemptRow)
                .where(AttemptRow.run_id == run_id, AttemptRow.step == step)
                .order_by(AttemptRow.id)
            )
        ).all()
        return [AttemptLog(r.attempt, r.shard, r.status, r.container) for r in rows]
