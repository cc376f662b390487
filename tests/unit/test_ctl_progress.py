"""maoctl pipeline run's progress: one plain line per change when piped, a live table on a terminal."""

from __future__ import annotations

import io

import pyte
from rich.console import Console

from ctl.progress import RunProgress, step_line


def record(status: str, steps: list[dict]) -> dict:
    return {"id": "r1", "pipeline": "p", "status": status, "steps": steps}


def step(name: str, status: str, attempts: int = 0, **fields: object) -> dict:
    return {
        "name": name,
        "status": status,
        "attempts": [{"attempt": n, "status": "x"} for n in range(1, attempts + 1)],
        **fields,
    }


def test_plain_lines_only_for_changes() -> None:
    out = io.StringIO()
    progress = RunProgress(Console(file=out, width=200), live=False)
    progress.update(record("running", [step("a", "running", 1), step("b", "pending")]))
    progress.update(record("running", [step("a", "running", 1), step("b", "pending")]))
    progress.update(record("running", [step("a", "running", 2), step("b", "pending")]))
    progress.update(
        record("succeeded", [step("a", "succeeded", 2, duration=1.25), step("b", "failed", 1, duration=0.5, exit_code=3)])
    )
    progress.close()
    assert out.getvalue().splitlines() == [
        "step a: running (attempt 1)",
        "step a: running (attempt 2)",
        "step a: succeeded in 1.2 s after 2 attempts",
        "step b: failed in 0.5 s (exit 3)",
    ]


def test_a_terminal_gets_a_live_table() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True)
    progress = RunProgress(console, live=True)
    progress.update(record("running", [step("collect", "running", 1, started_at="2020-01-01T00:00:00+00:00")]))
    progress.update(record("succeeded", [step("collect", "succeeded", 1, duration=0.61)]))
    progress.close()
    # What the terminal shows (read through an emulator, not the bytes): the table redrawn in place,
    # so only its last state is on the screen.
    screen = pyte.Screen(100, 40)
    pyte.Stream(screen).feed(out.getvalue().replace("\n", "\r\n"))
    text = "\n".join(line.rstrip() for line in screen.display)
    assert "collect" in text and "succeeded" in text and "0.6" in text and "attempt" in text
    assert "running" not in text and text.count("collect") == 1, text


def test_a_step_line_names_the_attempt() -> None:
    assert step_line(step("s", "running")) == "step s: running"
    assert step_line(step("s", "cached")) == "step s: cached"
