"""``maoctl pipeline backfill`` (start one, show one's progress, cancel one) and ``maoctl pipeline
backfills`` (list them): ``POST /pipeline/backfill``, ``GET /backfills[/{id}]``,
``POST /backfills/{id}/cancel``."""

from __future__ import annotations

import time
from typing import Any

import click

from ..client import segment
from ..context import Ctl, check_name, json_option, pass_ctl
from ..output import safe, status_text

POLL = 1.0  # seconds between two looks at a backfill --watch follows
ENDED = ("succeeded", "failed", "cancelled")


@click.command("backfill")
@click.option("--name", callback=check_name("pipeline name"), help="Start a backfill of this pipeline.")
@click.option("--from", "start", help="Start of the span, ISO 8601 with an offset (2026-03-01T00:00:00Z).")
@click.option("--to", "end", help="End of the span (included), ISO 8601 with an offset.")
@click.option("--cron", default=None, help="Ticks of this cron expression (default: the pipeline's schedule).")
@click.option("--timezone", default=None, help="Time zone of --cron (default: the schedule's, or UTC).")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="The runs' place in the queue (default 0).")
@click.option("--version", "version", type=click.IntRange(1, 2**31 - 1), help="Run this pipeline version.")
@click.option("--dry-run", is_flag=True, help="Only list the ticks; start nothing.")
@click.option("--id", "backfill_id", help="Show this backfill's progress (or cancel it with --cancel).")
@click.option("--cancel", is_flag=True, help="With --id: cancel its queued runs.")
@click.option("--running", is_flag=True, help="With --cancel: stop its running run too.")
@click.option("--watch", is_flag=True, help="Follow the progress until every run has ended.")
@json_option
@pass_ctl
def backfill_command(
    ctl: Ctl,
    name: str | None,
    start: str | None,
    end: str | None,
    cron: str | None,
    timezone: str | None,
    priority: int | None,
    version: int | None,
    dry_run: bool,
    backfill_id: str | None,
    cancel: bool,
    running: bool,
    watch: bool,
) -> None:
    """Run a pipeline once per tick between --from and --to, in order, one run at a time (--name);
    show a backfill's progress (--id), cancel it (--id --cancel [--running])."""
    if backfill_id is not None:
        if name or start or end or cron or timezone or priority is not None or version or dry_run:
            raise click.UsageError("--id shows (or cancels) a backfill: not with --name, --from, --to, ...")
        if running and not cancel:
            raise click.UsageError("--running goes with --cancel")
        path = f"/backfills/{segment(backfill_id)}"
        found = ctl.api.post(f"{path}/cancel", {"running": running}) if cancel else ctl.api.get(path)
        _follow(ctl, found, watch)
        return
    if cancel or running:
        raise click.UsageError("--cancel needs --id (maoctl pipeline backfills lists them)")
    if not (name and start and end):
        raise click.UsageError("give --name, --from and --to to start a backfill, or --id to show one")
    body: dict[str, Any] = {"name": name, "from": start, "to": end, "dry_run": dry_run}
    for key, value in (("cron", cron), ("timezone", timezone), ("priority", priority), ("version", version)):
        if value is not None:
            body[key] = value
    result = ctl.api.post("/pipeline/backfill", body)
    if dry_run or not result.get("backfill_id"):
        ctl.out.show(result, lambda: _show_ticks(ctl, result, dry_run))
        return
    if watch:
        _show_ticks(ctl, result, dry_run, out=ctl.out.note)
        _follow(ctl, ctl.api.get(f"/backfills/{segment(result['backfill_id'])}"), watch=True)
        return
    ctl.out.show(result, lambda: _show_ticks(ctl, result, dry_run))


@click.command("backfills")
@click.option("--name", callback=check_name("pipeline name"), help="Only this pipeline's backfills.")
@click.option("--active", is_flag=True, help="Only backfills with runs still queued or running.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="At most this many.")
@json_option
@pass_ctl
def backfills_command(ctl: Ctl, name: str | None, active: bool, limit: int) -> None:
    """This instance's backfills, newest first, with their progress."""
    found = ctl.api.get("/backfills", pipeline=name, active="true" if active else None, limit=limit)
    ctl.out.show(
        found,
        lambda: ctl.out.table(
            ["id", "pipeline", "status", "progress", "ticks", "cron", "version", "created"],
            [
                [b["id"], b["pipeline"], status_text(b["status"]), progress_line(b["progress"]),
                 f"{b['from']} .. {b['to']}", b["cron"], b.get("version"), b.get("created_at")]  # fmt: skip
                for b in found
            ],
            title="backfills",
        ),
    )


def progress_line(progress: dict[str, int]) -> str:
    """``3/10 ended: 2 done, 1 failed, 0 cancelled; 1 running, 6 queued``."""
    return (
        f"{progress['ended']}/{progress['total']} ended: {progress['done']} done, {progress['failed']} failed, "
        f"{progress['cancelled']} cancelled; {progress['running']} running, {progress['queued']} queued"
    )


def _show_ticks(ctl: Ctl, result: dict[str, Any], dry_run: bool, out: Any = None) -> None:
    say = out or ctl.out.line
    ticks = result.get("ticks") or []
    verb = "would run" if dry_run else "runs"
    say(f"Backfill of {result['pipeline']} ('{result.get('cron')}', {result.get('timezone')}) {verb} {len(ticks)} tick(s):")
    for tick in ticks:
        say(f"  {tick}")
    if not dry_run and result.get("backfill_id"):
        say(
            f"Backfill {result['backfill_id']}: follow it with `maoctl pipeline backfill --id {result['backfill_id']} "
            "--watch`, cancel it with `--cancel`."
        )


def _follow(ctl: Ctl, found: dict[str, Any], watch: bool) -> None:
    """Show the backfill; with ``watch`` poll it until it has ended, a line on stderr per change
    (with --json the last state is the one document on stdout)."""
    seen = None
    while watch and found.get("status") not in ENDED:
        line = progress_line(found["progress"])
        if line != seen:
            ctl.out.note(f"backfill {found['id']}: {found['status']}, {line}", style=None)
            seen = line
        time.sleep(POLL)
        found = ctl.api.get(f"/backfills/{segment(found['id'])}")
    ctl.out.show(found, lambda: _show_backfill(ctl, found))


def _show_backfill(ctl: Ctl, found: dict[str, Any]) -> None:
    ctl.out.fields(
        [
            ("backfill", found["id"]),
            ("pipeline", found["pipeline"]),
            ("status", status_text(found["status"])),
            ("progress", progress_line(found["progress"])),
            ("ticks", f"{found['count']} of '{found['cron']}' ({found['timezone']}) from {found['from']} to {found['to']}"),
            ("version", found.get("version") or "the current one when each run starts"),
            ("created", f"{found.get('created_at')} by {found.get('created_by') or '-'}"),
            ("cancelled", found.get("cancelled_at")),
        ]
    )
    if found.get("cancelled_runs") is not None:
        ctl.out.line(
            f"Cancelled {len(found['cancelled_runs'])} queued run(s)"
            + (f"; stopping {', '.join(found['stopping_runs'])}" if found.get("stopping_runs") else "")
            + "."
        )
    ctl.out.table(
        ["tick", "run", "status", "version", "started", "ended"],
        [[t.get("tick_at"), t["run_id"], status_text(t["status"]), t.get("version"), t.get("started_at"),
          t.get("ended_at")] for t in found.get("ticks") or []],  # fmt: skip
        title="ticks",
    )
    for tick in found.get("ticks") or []:
        if tick.get("error") and tick["status"] == "failed":
            ctl.out.line(safe(f"{tick.get('tick_at')}: {tick['error']}").plain, style="red")
