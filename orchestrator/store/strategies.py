"""The strategy watcher's state per step (``tables.StrategyStateRow``), read and written as the pure
machine's ``StrategyState`` (``domain/strategy.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from ..domain.strategy import StrategyState, ToolHealth
from . import Store
from .tables import StrategyStateRow, utcnow


class StrategyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, pipeline: str, step: str) -> StrategyState | None:
        async with self.store.reading(f"read the strategy of step {step} of {pipeline}") as s:
            row = await s.get(StrategyStateRow, (pipeline, step))
            return None if row is None else _state(row)

    async def of(self, pipeline: str) -> dict[str, StrategyState]:
        """Every step's state of one pipeline, by step name."""
        async with self.store.reading(f"read the strategies of {pipeline}") as s:
            rows = (
                await s.scalars(select(StrategyStateRow).where(StrategyStateRow.pipeline == pipeline))
            ).all()
            return {r.step: _state(r) for r in rows}

    async def all(self) -> dict[tuple[str, str], StrategyState]:
        async with self.store.reading("read the strategies") as s:
            rows = (await s.scalars(select(StrategyStateRow))).all()
            return {(r.pipeline, r.step): _state(r) for r in rows}

    async def put(self, pipeline: str, step: str, state: StrategyState) -> None:
        async with self.store.session(f"record the strategy of step {step} of {pipeline}") as s:
            row = await s.get(StrategyStateRow, (pipeline, step))
            if row is None:
                row = StrategyStateRow(pipeline=pipeline, step=step)
                s.add(row)
            row.active, row.since, row.reason, row.forced = (
                state.active,
                state.since,
                state.reason,
                state.forced,
            )
            row.tools = [_health_json(h) for h in state.tools]
            row.updated_at = utcnow()

    async def drop(self, pipeline: str, keep: frozenset[str] = frozenset()) -> None:
        """Forget the pipeline's steps' states, but those of ``keep`` (steps that still have a strategy)."""
        async with self.store.session(f"forget the strategies of {pipeline}") as s:
            query = delete(StrategyStateRow).where(StrategyStateRow.pipeline == pipeline)
            if keep:
                query = query.where(StrategyStateRow.step.not_in(sorted(keep)))
            await s.execute(query)


def _state(row: StrategyStateRow) -> StrategyState:
    tools = tuple(
        ToolHealth(str(t["tool"]), int(t["failures"]), _when(t.get("opened_at")), _when(t.get("probed_at")))
        for t in row.tools
    )
    return StrategyState(tools, row.active, row.since, row.reason, row.forced)


def _health_json(health: ToolHealth) -> dict[str, Any]:
    return {
        "tool": health.tool,
        "failures": health.failures,
        "opened_at": health.opened_at.isoformat() if health.opened_at else None,
        "probed_at": health.probed_at.isoformat() if health.probed_at else None,
    }


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
