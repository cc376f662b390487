"""``maoctl pipeline backfill``: one run per tick of a span, in order (``POST /pipeline/backfill``)."""

from __future__ import annotations

from typing import Any

import click

from ..context import Ctl, json_option, name_option, pass_ctl


@click.command("backfill")
@name_option("pipeline")
@click.option(
    "--from",
    "start",
    required=True,
    help="Start of the span, ISO 8601 with an offset (2026-03-01T00:00:00Z).",
)
@click.option("--to", "end", required=True, help="End of the span (included), ISO 8601 with an offset.")
@click.option(
    "--cron", default=None, help="Ticks of this cron expression (default: the pipeline's schedule)."
)
@click.option("--timezone", default=None, help="Time zone of --cron (default: the schedule's, or UTC).")
@click.option("--dry-run", is_flag=True, help="Only list the ticks; start nothing.")
@json_option
@pass_ctl
def backfill_command(
    ctl: Ctl, name: str, start: str, end: str, cron: str | None, timezone: str | None, dry_run: bool
) -> None:
    """Run a pipeline once per tick between --from and --to, in order, one run at a time."""
    body: dict[str, Any] = {"name": name, "from": start, "to": end, "dry_run": dry_run}
    if cron:
        body["cron"] = cron
    if timezone:
        body["timezone"] = timezone
    result = ctl.api.post("/pipeline/backfill", body)

    def show() -> None:
        ticks = result.get("ticks") or []
        verb = "would run" if dry_run else "runs"
        ctl.out.line(
            f"Backfill of {name} ('{result.get('cron')}', {result.get('timezone')}) {verb} {len(ticks)} tick(s):"
        )
        for tick in ticks:
            ctl.out.line(f"  {tick}")
        if not dry_run and ticks:
            ctl.out.line(f"Follow the runs with `maoctl pipeline runs --name {name}` (trigger backfill).")

    ctl.out.show(result, show)
