"""``maoctl pipeline runs`` and ``maoctl pipeline run-show``: the run history of this instance."""

from __future__ import annotations

from typing import Any

import click

from ..client import segment
from ..context import Ctl, check_name, json_option, pass_ctl
from ..output import short, status_text

RUN_STATUSES = ("pending", "running", "succeeded", "failed")


@click.command("runs")
@click.option("--name", callback=check_name("pipeline name"), help="Only this pipeline's runs.")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs in this state.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="At most this many."
)
@json_option
@pass_ctl
def runs_command(ctl: Ctl, name: str | None, status: str | None, limit: int) -> None:
    """The latest runs, newest first."""
    runs = ctl.api.get("/runs", pipeline=name, status=status, limit=limit)
    ctl.out.show(
        runs,
        lambda: ctl.out.table(
            ["id", "pipeline", "status", "trigger", "started", "duration (s)", "error"],
            [
                [
                    r["id"],
                    r["pipeline"],
                    status_text(r["status"]),
                    r["trigger"],
                    r.get("started_at"),
                    r.get("duration"),
                    r.get("error"),
                ]
                for r in runs
            ],
            title="runs",
        ),
    )


@click.command("run-show")
@click.option("--id", "run_id", required=True, help="The run's id (from `maoctl pipeline runs`).")
@json_option
@pass_ctl
def show_run_command(ctl: Ctl, run_id: str) -> None:
    """One run: its steps, exit codes, commits and the tail of each step's log."""
    run = ctl.api.get(f"/runs/{segment(run_id)}")
    ctl.out.show(run, lambda: show_run(ctl, run))


def show_run(ctl: Ctl, run: dict[str, Any]) -> None:
    ctl.out.fields(
        [
            ("run", run["id"]),
            ("pipeline", run["pipeline"]),
            ("status", status_text(run["status"])),
            ("trigger", run.get("trigger")),
            ("started", run.get("started_at")),
            ("ended", run.get("ended_at")),
            ("duration (s)", run.get("duration")),
            ("error", run.get("error")),
        ]
    )
    steps = run.get("steps") or []
    ctl.out.table(
        ["#", "step", "tool", "status", "exit", "input commit", "output commit", "merged", "s"],
        [
            [
                s.get("position"),
                s["name"],
                s.get("tool"),
                status_text(s.get("status")),
                s.get("exit_code"),
                short(s.get("input_commit")),
                short(s.get("output_commit")),
                short(s.get("merge_commit")),
                s.get("duration"),
            ]
            for s in steps
        ],
        title="steps",
    )
    for s in steps:
        if s.get("error"):
            ctl.out.line(f"{s['name']}: {s['error']}", style="red")
        if (s.get("log_tail") or "").strip():
            ctl.out.line(f"--- log of step {s['name']} (last lines) ---", style="bold")
            ctl.out.line(s["log_tail"].rstrip("\n"))
