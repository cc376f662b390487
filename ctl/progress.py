"""Live progress of a run ``maoctl pipeline run`` waits for: the steps' states as they change.

On a terminal a rich Live table (step, state, attempt, duration) redrawn in place; otherwise (piped,
redirected) one plain line per change a script can read::

    step collect: running (attempt 1)
    step collect: succeeded in 0.6 s
    step summarise: running (attempt 1)

Both go to the console ``Output`` gives people (stdout without ``--json``); with ``--json`` nothing
of this is shown (the run record is the only output).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .output import safe, status_text

ENDED = ("succeeded", "failed", "cancelled")


def _seconds(step: dict[str, Any]) -> float | None:
    if step.get("duration") is not None:
        return float(step["duration"])
    started = step.get("started_at")
    if not started:
        return None
    try:
        begun = datetime.fromisoformat(started)
    except ValueError:
        return None
    if begun.tzinfo is None:
        begun = begun.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - begun).total_seconds())


def _attempt(step: dict[str, Any]) -> int | None:
    numbers = [a.get("attempt") for a in step.get("attempts") or [] if isinstance(a.get("attempt"), int)]
    return max(numbers) if numbers else None


def step_line(step: dict[str, Any]) -> str:
    """The plain line for a step's present state."""
    status = step.get("status") or "?"
    attempt = _attempt(step)
    if status == "running":
        return f"step {step['name']}: running" + (f" (attempt {attempt})" if attempt else "")
    seconds = step.get("duration")
    text = f"step {step['name']}: {status}"
    if seconds is not None:
        text += f" in {float(seconds):.1f} s"
    if attempt and attempt > 1:
        text += f" after {attempt} attempts"
    if step.get("exit_code") not in (None, 0):
        text += f" (exit {step['exit_code']})"
    return text


class RunProgress:
    """Feed it each fresh ``GET /runs/{id}`` record with ``update``; ``close`` when the run ended."""

    def __init__(self, console: Console, live: bool) -> None:
        self.console = console
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._live = Live(console=console, refresh_per_second=4, transient=False) if live else None
        if self._live is not None:
            self._live.start()

    def update(self, run: dict[str, Any]) -> None:
        steps = run.get("steps") or []
        if self._live is not None:
            self._live.update(self._table(run, steps), refresh=True)
            return
        for step in steps:
            if step.get("status") == "pending":
                continue
            key = (step.get("status"), _attempt(step))
            if self._seen.get(step["name"]) != key:
                self._seen[step["name"]] = key
                self.console.print(safe(step_line(step)), highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()

    @staticmethod
    def _table(run: dict[str, Any], steps: list[dict[str, Any]]) -> Table:
        table = Table(title=safe(f"run {run.get('id')} of {run.get('pipeline')}: {run.get('status')}"))
        for column in ("step", "state", "attempt", "duration (s)"):
            table.add_column(column)
        for step in steps:
            seconds = _seconds(step)
            attempt = _attempt(step)
            table.add_row(
                safe(step["name"]),
                status_text(step.get("status")),
                str(attempt) if attempt else "",
                f"{seconds:.1f}" if seconds is not None else "",
            )
        return table
