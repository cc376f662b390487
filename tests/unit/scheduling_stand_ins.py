"""What the scheduler's unit tests share: a stand-in runner and a SQLite store holding pipeline ``p``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orchestrator.domain.pipeline import Pipeline
from orchestrator.runs.admission import Busy
from orchestrator.store import Store


class StandInRunner:
    """The part of ``Runner`` the schedulers call. Every start is recorded in ``started`` (``id``,
    ``pipeline``, ``trigger`` and the cause: ``tick_at`` and the like). With ``keep_active`` a started
    run stays its pipeline's active run until ``finish`` (so "one at a time" can be watched); a second
    start of a busy pipeline is then a bug unless the tick asked for ``allow``. ``active`` may also
    be set by hand: pipeline -> its running runs."""

    def __init__(self, keep_active: bool = False) -> None:
        self.keep_active = keep_active
        self.active: dict[str, list[str]] = {}
        self.started: list[dict[str, Any]] = []

    def active_run(self, pipeline: str) -> str | None:
        runs = self.active.get(pipeline)
        return runs[0] if runs else None

    def active_runs(self, pipeline: str) -> list[str]:
        return list(self.active.get(pipeline, []))

    def is_queued(self, run_id: str) -> bool:
        return False

    async def start(
        self,
        name: str,
        trigger: str,
        schedule_id: str | None = None,
        *,
        priority: int = 0,
        busy: Busy | None = None,
        **cause: Any,
    ) -> str:
        if self.keep_active and self.active.get(name):
            assert busy is Busy.ALLOW, f"a second run of {name} at once without overlap 'allow'"
        run_id = f"run{len(self.started) + 1}"
        self.started.append({"id": run_id, "pipeline": name, "trigger": trigger, "busy": busy, **cause})
        if self.keep_active:
            self.active.setdefault(name, []).append(run_id)
        return run_id

    async def wait(self, run_id: str) -> None:
        return None

    def finish(self, pipeline: str = "p") -> None:
        """The pipeline's oldest active run ends."""
        runs = self.active.get(pipeline)
        if runs:
            runs.pop(0)


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
