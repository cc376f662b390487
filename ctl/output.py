"""How maoctl shows results: rich tables for people, plain JSON on stdout with ``--json``.

With ``--json`` stdout carries exactly one JSON document (the API's answer, unchanged where there is
one) so scripts can pipe it to ``jq``; whatever is still printed for people (a wizard's questions and
summaries) goes to stderr then.

Everything shown passes ``safe_text``: no text from a server, a tool or a file drives the terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .safe_text import clean, json_text

YES, NO = "✓", "✗"
# Piped or redirected output is never wrapped: each table row is one line however wide it grows (many
# rows, long names), so grep finds whole rows and an id is never cut in two. Rich needs some width:
# this one no row reaches (a table is only as wide as its cells).
PIPE_WIDTH = 1_000_000


class Output:
    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        # Console() resolves sys.stdout when it prints, so click's test runner captures it too. A
        # terminal wraps at its width; piped output does not wrap (PIPE_WIDTH).
        width = None if sys.stdout.isatty() else PIPE_WIDTH
        self.console = Console(highlight=False, width=width)
        self.err_console = Console(
            highlight=False, stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH
        )

    def show(self, data: Any, human: Callable[[], None]) -> None:
        """Print ``data`` as JSON with --json, otherwise call ``human`` to render it."""
        if self.as_json:
            self.json(data)
        else:
            human()

    def json(self, data: Any) -> None:
        # JSON escapes C0 controls itself; json_text escapes the rest (DEL, C1, bidi overrides).
        click.echo(json_text(json.dumps(data, indent=2, ensure_ascii=False)))

    @property
    def human_console(self) -> Console:
        return self.err_console if self.as_json else self.console

    def line(self, text: str = "", style: str | None = None) -> None:
        """A sentence for people (on stderr with --json: stdout is for the JSON document)."""
        # soft_wrap: a sentence (often a command to copy) is never broken by inserted newlines.
        self.human_console.print(Text(clean(text), style=style or ""), soft_wrap=True)

    def note(self, text: str, style: str | None = "dim") -> None:
        """A hint on stderr: shown in both modes, never mixed into the JSON on stdout."""
        self.err_console.print(Text(clean(text), style=style or ""), soft_wrap=True)

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        title: str | None = None,
        empty: str = "(none)",
    ) -> None:
        rows = list(rows)
        if not rows:
            self.line(f"{title}: {empty}" if title else empty, style="dim")
            return
        table = Table(
            title=safe(title) if title else None, title_justify="left", show_lines=False, header_style="bold"
        )
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(cell(value) for value in row))
        self.human_console.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
        """``key  value`` lines, for one object (a tool, a run)."""
        table = Table(
            title=safe(title) if title else None,
            title_justify="left",
            show_header=False,
            box=None,
            pad_edge=False,
        )
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in pairs:
            table.add_row(safe(key), cell(value))
        self.human_console.print(table)


def safe(value: Any, style: str = "") -> Text:
    """Any value as rich Text that cannot drive the terminal (and is never read as rich markup)."""
    if isinstance(value, Text):
        plain = clean(value.plain)
        return value if plain == value.plain else Text(plain, style=value.style)
    return Text(clean(str(value)), style=style) if value is not None else Text("")


def cell(value: Any) -> Text:
    """A table cell: None shows as '-', booleans as ✓/✗, lists and dicts compactly."""
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text(YES if value else NO, style="green" if value else "red")
    if isinstance(value, dict):
        return safe(", ".join(f"{k}={v}" for k, v in value.items()) or "-")
    if isinstance(value, list | tuple):
        return safe(", ".join(str(v) for v in value) or "-")
    return safe(value)


def status_text(status: str | None) -> Text:
    colours = {
        "succeeded": "green",
        "cached": "green",
        "reused": "green",
        "ok": "green",
        "failed": "red",
        "conflict": "red",
        "stalled": "red",
        "timed_out": "red",
        "running": "yellow",
        "pending": "yellow",
        "queued": "yellow",
        "cancelled": "magenta",
        "skipped": "dim",
    }
    return safe(status or "-", style=colours.get(status or "", ""))


def short(commit: str | None) -> str | None:
    return commit[:12] if commit else None
