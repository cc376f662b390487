"""What the scheduler's unit tests share besides the door in memory (``memory_door``): a SQLite store
holding pipeline ``p``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from orchestrator.domain.pipeline import Pipeline
from orchestrator.store import Store


@contextlib.asynccontextmanager
async def store_with_pipeline(tmp_path: Path, name: str = "p") -> AsyncIterator[Store]:
    """A SQLite store in ``tmp_path`` where a one-step pipeline ``name`` is initialised."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    pipeline = Pipeline.model_validate(
        {"name": name, "steps": [{"name": "s", "tool": "t", "output_dataset": "d"}]}
    )

    async def nothing() -> None:
        return None

    try:
        await store.save_pipeline(pipeline, before_commit=nothing)
        yield store
    finally:
        await store.close()
