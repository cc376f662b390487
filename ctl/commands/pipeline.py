"""``maoctl pipeline``: pipelines on this instance, running and scheduling them, and their runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ..client import ApiError, CtlError, segment
from ..context import (
    Ctl,
    confirm,
    file_option,
    json_option,
    labels_option,
    name_option,
    pass_ctl,
    yes_option,
)
from ..pipeline_input import ask_pipeline, ask_private_values, pipeline_from_file
from ..progress import ENDED, RunProgress
from .backfill import backfill_command, backfills_command
from .logs import logs_command
from .registry import accept_pipeline
from .runs import cancel_run_command, queue_command, runs_command, show_run, show_run_command
from .strategy import strategy_command
from .versions import diff_command, versions_command

POLL = 0.5  # seconds between two looks at a run maoctl waits for


@click.group()
def pipeline() -> None:
    """Pipelines: steps that run tools and write into datasets."""


pipeline.add_command(runs_command)
pipeline.add_command(show_run_command)
pipeline.add_command(backfill_command)
pipeline.add_command(backfills_command)
pipeline.add_command(versions_command)
pipeline.add_command(diff_command)
pipeline.add_command(cancel_run_command)
pipeline.add_command(queue_command)
pipeline.add_command(logs_command)
pipeline.add_command(accept_pipeline)
pipeline.add_command(strategy_command)


@pipeline.command("retry")
@click.option(
    "--id", "run_id", required=True, help="The failed or cancelled run (from `maoctl pipeline runs`)."
)
@click.option(
    "--current",
    is_flag=True,
    help="Run the pipeline as it is now (default: the version the run ran with); changed steps run again.",
)
@click.option("--no-wait", is_flag=True, help="Start the retry and return at once, showing its plan.")
@json_option
@pass_ctl
def retry_run(ctl: Ctl, run_id: str, current: bool, no_wait: bool) -> None:
    """Retry a failed or cancelled run from its failed step: a new run that reuses the steps the run
    got done (status reused, its commits, no container) and runs the others and everything downstream
    of them. Waits for the retry's end (exit 1 if it failed) unless --no-wait."""
    body: dict[str, Any] = {"definition": "current"} if current else {}
    path = f"/runs/{segment(run_id)}/retry"
    if ctl.out.as_json and not no_wait:
        run = ctl.api.post(path, {**body, "wait": True}, wait_forever=True)
        ctl.out.show(run, lambda: None)
    else:
        started = ctl.api.post(path, body)
        if no_wait:
            ctl.out.show(started, lambda: _show_plan(ctl, started))
            return
        _show_plan(ctl, started)
        run = follow_with_progress(ctl, started["id"])
        ctl.out.show(run, lambda: show_run(ctl, run))
    if run.get("status") == "failed":
        raise click.exceptions.Exit(1)


def _show_plan(ctl: Ctl, started: dict[str, Any]) -> None:
    verb = "Queued" if started.get("status") == "queued" else "Started"
    ctl.out.line(
        f"{verb} run {started['id']} of {started['pipeline']} (version {started.get('version')}), "
        f"retrying run {started['retry_of']}:"
    )
    for planned in started.get("plan") or []:
        ctl.out.line(f"  {planned['step']}: {planned['action']} ({planned['reason']})")


def wait_with_progress(ctl: Ctl, name: str, policies: dict[str, Any]) -> dict[str, Any]:
    """Start a run of ``name`` and poll it to its end, showing its steps' progress on stderr (a live
    table on a terminal, one line per change otherwise); returns the ended run's record, the same
    record the waiting ``POST /pipeline/run`` answers."""
    run_id = ctl.api.post("/pipeline/run", {"name": name, "wait": False, **policies})["id"]
    return follow_with_progress(ctl, run_id)


def follow_with_progress(ctl: Ctl, run_id: str) -> dict[str, Any]:
    """Poll run ``run_id`` to its end, showing its steps' progress (see ``wait_with_progress``)."""
    live = sys.stdout.isatty() and sys.stderr.isatty()
    progress = RunProgress(ctl.out.err_console, live=live)
    try:
        while True:
            run: dict[str, Any] = ctl.api.get(f"/runs/{segment(run_id)}")
            progress.update(run)
            if run.get("status") in ENDED:
                return run
            time.sleep(POLL)
    finally:
        progress.close()


@pipeline.command("get")
@name_option("pipeline", required=False, help="Show this pipeline only.")
@click.option("--federation", is_flag=True, help="List the pipelines registered in the federation instead.")
@json_option
@pass_ctl
def get_pipeline(ctl: Ctl, name: str | None, federation: bool) -> None:
    """List the pipelines initialised on this instance, or show one."""
    if federation:
        if name:
            found = ctl.api.get(f"/registry/pipelines/{segment(name)}")
            ctl.out.show(found, lambda: _show_pipeline(ctl, found))
        else:
            names = ctl.api.get("/registry/pipelines")
            ctl.out.show(
                names, lambda: ctl.out.table(["name"], [[n] for n in names], title="federation pipelines")
            )
        return
    if name:
        found = ctl.api.get(f"/pipeline/{segment(name)}")
        ctl.out.show(found, lambda: _show_pipeline(ctl, found))
        return
    pipelines = ctl.api.get("/pipeline")
    ctl.out.show(
        pipelines,
        lambda: ctl.out.table(
            ["name", "description", "steps"],
            [[p["name"], p.get("description"), [s["name"] for s in p["steps"]]] for p in pipelines],
            title="pipelines on this instance",
        ),
    )


def _show_pipeline(ctl: Ctl, found: dict[str, Any]) -> None:
    pairs = [("name", found["name"]), ("description", found.get("description"))]
    if "instances" in found:
        pairs.append(("instances", found["instances"]))
    ctl.out.fields(pairs)
    ctl.out.table(
        ["step", "tool", "input", "output", "cmd", "env", "docker socket"],
        [
            [
                s["name"],
                s["tool"],
                s.get("input_dataset"),
                s["output_dataset"],
                " ".join(s.get("cmd") or []),
                s.get("env"),
                bool(s.get("docker_socket")),
            ]
            for s in found["steps"]
        ],
    )


@pipeline.command("add")
@file_option(
    "--file",
    "path",
    "A pipeline as JSON or YAML ({name, description, steps}); without it maoctl asks step by step.",
)
@json_option
@pass_ctl
def add_pipeline(ctl: Ctl, path: Path | None) -> None:
    """Initialise a pipeline on this instance (and register it in the federation)."""
    if path is not None:
        definition = pipeline_from_file(path)
    else:
        definition = ask_pipeline(ctl.api.get("/registry/tools"), ctl.api.get("/registry/datasets"))
    ask_private_values(definition)
    try:
        result = ctl.api.post("/pipeline/init", definition)
    except ApiError as exc:
        errors = exc.body.get("errors") or {}
        if errors.get("missing_tools") or errors.get("missing_datasets"):
            raise CtlError(
                f"{exc.message} (register them with `maoctl tool add` / `maoctl dataset add`, "
                "or let `maoctl instance init` offer to)"
            ) from exc
        raise
    ctl.out.show(
        result,
        lambda: ctl.out.line(
            f"Initialised pipeline {result['name']} with {len(result['steps'])} step(s); "
            f"run it with: maoctl pipeline run --name {result['name']}"
        ),
    )


@pipeline.command("remove")
@name_option("pipeline")
@yes_option
@json_option
@pass_ctl
def remove_pipeline(ctl: Ctl, name: str, yes: bool) -> None:
    """Delete a pipeline from this instance (its schedules too; run history and datasets stay)."""
    confirm(f"Delete pipeline {name} and its schedules from this instance?", yes)
    result = ctl.api.delete(f"/pipeline/{segment(name)}")
    ctl.out.show(result, lambda: ctl.out.line(f"Deleted pipeline {name}."))


@pipeline.command("run")
@name_option("pipeline")
@click.option(
    "--cron", help="Schedule instead of running now: a 5-field cron expression, e.g. '*/15 * * * *'."
)
@click.option("--timezone", help="The cron expression's timezone (default UTC), e.g. Europe/Zurich.")
@click.option("--no-wait", is_flag=True, help="Start the run and return its id at once.")
@click.option(
    "--scope",
    type=click.Choice(["instance", "federation"]),
    default="instance",
    show_default=True,
    help="federation: one elected instance fires each tick of the schedule (needs --cron).",
)
@labels_option("With --scope federation: only instances with these labels may fire it (repeatable).")
@click.option("--add", "add", is_flag=True, help="With --cron: another schedule, not a replacement.")
@click.option(
    "--catchup",
    type=click.Choice(["none", "latest", "all"]),
    help="With --cron: what runs of the ticks missed while the instance was down (default latest).",
)
@click.option(
    "--catchup-window", type=int, help="With --cron: missed ticks older than this (seconds) never run."
)
@click.option("--on-dataset", help="Run at each ground-truth advance of this dataset (a data trigger).")
@click.option(
    "--priority",
    type=click.IntRange(-1000, 1000),
    help="Queue order when the instance is full (higher first, then older); on a schedule, its runs'.",
)
@click.option(
    "--overlap",
    type=click.Choice(["skip", "replace", "queue", "allow"]),
    help="When the pipeline is already running: skip (refuse; the default), replace it, queue behind it, "
    "or allow (run beside it).",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(1, 2**31 - 1),
    help="Run this earlier version of the pipeline (maoctl pipeline versions lists them); a run now only.",
)
@json_option
@pass_ctl
def run_pipeline(
    ctl: Ctl,
    name: str,
    cron: str | None,
    timezone: str | None,
    no_wait: bool,
    scope: str,
    labels: dict[str, str],
    add: bool,
    catchup: str | None,
    catchup_window: int | None,
    on_dataset: str | None,
    priority: int | None,
    overlap: str | None,
    version: int | None,
) -> None:
    """Run a pipeline now (waiting for the end), schedule it with --cron, or trigger it with --on-dataset."""
    policies: dict[str, Any] = {
        k: v for k, v in (("priority", priority), ("overlap", overlap)) if v is not None
    }
    if version is not None:
        if on_dataset or cron:
            raise click.UsageError(
                "--version runs an earlier version now: a schedule or trigger runs the current one "
                "(initialise the old definition again to schedule it)"
            )
        policies["version"] = version
    if on_dataset:
        if cron or no_wait:
            raise click.UsageError("--on-dataset arms a data trigger: not with --cron or --no-wait")
        body: dict[str, Any] = {"name": name, "trigger": {"dataset": on_dataset}, "scope": scope, **policies}
        if labels:
            body["placement"] = {"labels": labels}
        job = ctl.api.post("/pipeline/run", body)
        ctl.out.show(
            job,
            lambda: ctl.out.line(
                f"{name} runs at each ground-truth advance of {on_dataset} ({scope}); job id {job['job_id']}."
            ),
        )
        return
    if (add or catchup or catchup_window) and not cron:
        raise click.UsageError("--add, --catchup and --catchup-window apply to a schedule: give --cron too")
    if scope == "federation" and not cron:
        raise click.UsageError("--scope federation schedules a pipeline: give --cron too")
    if labels and scope != "federation":
        raise click.UsageError(
            "--label chooses where a federation-wide schedule fires: add --scope federation"
        )
    if timezone and not cron:
        raise click.UsageError("--timezone only applies to a schedule: give --cron too")
    if cron:
        if no_wait:
            raise click.UsageError("--no-wait only applies to a run now, not to --cron")
        body = {"name": name, "cron": cron, **policies}
        if timezone:
            body["timezone"] = timezone
        if add:
            body["add"] = True
        if catchup:
            body["catchup"] = catchup
        if catchup_window:
            body["catchup_window"] = catchup_window
        if scope == "federation":
            body["scope"] = "federation"
            body["placement"] = {"labels": labels}
        job = ctl.api.post("/pipeline/run", body)
        ctl.out.show(job, lambda: _show_schedule(ctl, job))
        return
    if no_wait:
        started = ctl.api.post("/pipeline/run", {"name": name, "wait": False, **policies})
        verb = "Queued" if started.get("status") == "queued" else "Started"
        ctl.out.show(
            started,
            lambda: ctl.out.line(
                f"{verb} run {started['id']} of {name}; follow it with: maoctl pipeline run-show --id {started['id']}"
            ),
        )
        return
    if ctl.out.as_json:
        run = ctl.api.post("/pipeline/run", {"name": name, **policies}, wait_forever=True)
    else:
        ctl.out.note(f"Running {name} (waiting for it to end)...")
        run = wait_with_progress(ctl, name, policies)
    ctl.out.show(run, lambda: show_run(ctl, run))
    if run.get("status") == "failed":
        raise click.exceptions.Exit(1)


def _show_schedule(ctl: Ctl, job: dict[str, Any]) -> None:
    where = (
        f", fired by one instance of the federation{_labels_text(job)}"
        if job.get("scope") == "federation"
        else ""
    )
    ctl.out.line(
        f"Scheduled {job['pipeline']}: '{job['cron']}' ({job['timezone']}){where}; job id {job['job_id']}."
    )
    ctl.out.line(
        f"List schedules with `maoctl tool list-scheduled`; remove it with `maoctl tool stop --id {job['job_id']}`."
    )


def _labels_text(job: dict[str, Any]) -> str:
    labels = (job.get("placement") or {}).get("labels") or {}
    return " labelled " + ", ".join(f"{k}={v}" for k, v in labels.items()) if labels else ""
