"""``maoctl pipeline runs``, ``run-show``, ``queue`` and ``cancel``: the run history of this instance."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text
from rich.tree import Tree

from ..client import segment
from ..context import Ctl, check_name, json_option, pass_ctl
from ..output import safe, short, status_text

RUN_STATUSES = ("pending", "queued", "running", "succeeded", "failed", "cancelled")


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
            ["id", "pipeline", "version", "status", "trigger", "started", "duration (s)", "error"],
            [
                [
                    r["id"],
                    r["pipeline"],
                    r.get("version"),
                    status_text(r["status"]),
                    r["trigger"] + (f" of {r['retry_of']}" if r.get("retry_of") else ""),
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
    """One run: its steps as a graph with their states and attempts, exit codes, commits and the tail
    of each step's log."""
    run = ctl.api.get(f"/runs/{segment(run_id)}")
    ctl.out.show(run, lambda: show_run(ctl, run))


def show_run(ctl: Ctl, run: dict[str, Any]) -> None:
    ctl.out.fields(
        [
            ("run", run["id"]),
            ("pipeline", run["pipeline"]),
            ("version", run.get("version")),
            ("status", status_text(run["status"])),
            ("trigger", run.get("trigger")),
            *([("retry of", run["retry_of"])] if run.get("retry_of") else []),
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
    if steps:
        ctl.out.human_console.print(step_tree(steps))
    for s in steps:
        if s.get("reason"):  # a retry's step: why it was reused or ran again
            ctl.out.line(f"{s['name']}: {s.get('status')}: {s['reason']}", style="dim")
        if s.get("error"):
            ctl.out.line(f"{s['name']}: {s['error']}", style="red")
        if (s.get("log_tail") or "").strip():
            ctl.out.line(f"--- log of step {s['name']} (last lines) ---", style="bold")
            ctl.out.line(s["log_tail"].rstrip("\n"))


@click.command("queue")
@json_option
@pass_ctl
def queue_command(ctl: Ctl) -> None:
    """The runs waiting to start, in the order they will be considered (GET /queue)."""
    queued = ctl.api.get("/queue")
    ctl.out.show(
        queued,
        lambda: ctl.out.table(
            ["#", "id", "pipeline", "priority", "trigger", "queued", "waiting for"],
            [
                [
                    e["position"],
                    e["id"],
                    e["pipeline"],
                    e["priority"],
                    e["trigger"],
                    e["queued_at"],
                    e["waiting_for"],
                ]
                for e in queued
            ],
            title="queue",
        ),
    )


@click.command("cancel")
@click.option("--id", "run_id", required=True, help="The run's id (from `maoctl pipeline runs`).")
@json_option
@pass_ctl
def cancel_run_command(ctl: Ctl, run_id: str) -> None:
    """Cancel a run: a running one's containers are killed, nothing of an unfinished step is pushed;
    a queued one ends without starting."""
    answer = ctl.api.post(f"/runs/{segment(run_id)}/cancel", None)
    ctl.out.show(
        answer,
        lambda: ctl.out.line(
            f"Cancelling run {run_id}; see its end with: maoctl pipeline run-show --id {run_id}"
        ),
    )


def _step_label(step: dict[str, Any]) -> Text:
    label = Text(step["name"], style="bold")
    label.append("  ")
    label.append_text(status_text(step.get("status")))
    if step.get("tool"):
        label.append(f"  {step['tool']}", style="dim")
    return label


def _attempt_label(attempt: dict[str, Any]) -> Text:
    label = Text(f"attempt {attempt.get('attempt')}")
    if attempt.get("shard") is not None:
        label.append(f" shard {attempt['shard']}")
    label.append(f" {attempt.get('tool')}: ", style="dim")
    label.append_text(status_text(attempt.get("status")))
    if attempt.get("exit_code") is not None:
        label.append(f" (exit {attempt['exit_code']})", style="dim")
    return label


def step_tree(steps: list[dict[str, Any]]) -> Tree:
    """The steps as a tree from the roots along ``needs``. A step with several needs is drawn under
    its first one and names the others ("also needs ..."), so each step appears once."""
    names = {s["name"] for s in steps}
    tree = Tree(Text("steps", style="bold"))
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in steps:
        needs = [n for n in (s.get("needs") or []) if n in names]
        if needs:
            children.setdefault(needs[0], []).append(s)
        else:
            roots.append(s)

    def add(parent: Tree, step: dict[str, Any]) -> None:
        label = _step_label(step)
        others = [n for n in (step.get("needs") or [])[1:]]
        if others:
            label.append(f"  (also needs {', '.join(others)})", style="dim")
        branch = parent.add(safe(label))
        for attempt in step.get("attempts") or []:
            branch.add(safe(_attempt_label(attempt)))
        if step.get("shards"):
            branch.add(safe("shards: " + ", ".join(f"{k}={v}" for k, v in step["shards"].items())))
        for child in children.get(step["name"], []):
            add(branch, child)

    for root in roots:
        add(tree, root)
    return tree
