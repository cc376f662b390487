"""``maoctl tool``: the federation's tool registry, and this instance's scheduled jobs (prototype names)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from ..client import ApiError, Client, CtlError, segment
from ..context import Ctl, confirm, json_option, name_option, pass_ctl, yes_option
from .registry import accept_command

ID_HELP = "The schedule's id (see `maoctl tool list-scheduled`)."


@click.group()
def tool() -> None:
    """Tools (container images) registered in the federation; scheduled jobs."""


def registry_entry(api: Client, path: str) -> dict[str, Any]:
    """One registry entry (``GET /registry/tools/{name}``, ``.../datasets/{name}``): an orchestrator in
    legacy open mode answers it as the prototype did, a string holding the entry's JSON."""
    found = api.get(path)
    if isinstance(found, str):
        try:
            found = json.loads(found)
        except ValueError:
            pass
    if not isinstance(found, dict):
        raise CtlError(f"GET {path} answered something that is not a registry entry: {str(found)[:200]!r}")
    return found


def fetch_all(api: Client, names: list[str], path: str) -> list[dict[str, Any]]:
    """Each entry's details; one removed between the listing and the fetch is left out."""
    entries = []
    for name in names:
        try:
            entries.append(registry_entry(api, f"{path}/{segment(name)}"))
        except ApiError as exc:
            if exc.status != 404:
                raise
    return entries


def show_registered(
    ctl: Ctl,
    kind: str,
    name: str | None,
    columns: list[str],
    row: Callable[[dict[str, Any]], list[Any]],
) -> None:
    """``maoctl tool get`` and ``maoctl dataset get``: one entry of ``/registry/{kind}s`` by name,
    or every entry as a table of ``columns`` (``row`` picks them)."""
    path = f"/registry/{kind}s"
    if name:
        found = registry_entry(ctl.api, f"{path}/{segment(name)}")
        ctl.out.show(found, lambda: ctl.out.fields(found.items(), title=f"{kind} {name}"))
        return
    entries = fetch_all(ctl.api, ctl.api.get(path), path)
    ctl.out.show(entries, lambda: ctl.out.table(columns, [row(e) for e in entries], title=f"{kind}s"))


@tool.command("get")
@name_option("tool", required=False, help="Show this tool only.")
@json_option
@pass_ctl
def get_tool(ctl: Ctl, name: str | None) -> None:
    """List the registered tools, or show one."""
    show_registered(
        ctl,
        "tool",
        name,
        ["name", "image", "author", "description"],
        lambda t: [t["name"], t["image"], t.get("author"), t.get("description")],
    )


@tool.command("add")
@name_option("tool")
@click.option("--image", required=True, help="The container image, e.g. registry.example.org/tool:1.2.")
@click.option("--author", default="", help="Who maintains the tool.")
@click.option("--data-repo", "--data_repo", "data_repo", default="", help="Where its data lives.")
@click.option("--code-repo", "--code_repo", "code_repo", default="", help="Where its code lives.")
@click.option("--artefact", default="", help="The build artefact (usually the image again).")
@click.option("--description", default="", help="One sentence about what it does.")
@json_option
@pass_ctl
# '/': pass_ctl hands ctl by position, and its type (Concatenate) says so only of a positional-only first
# parameter when the others are **keywords.
def add_tool(ctl: Ctl, /, **fields: str) -> None:
    """Register a tool in the federation (replaces an existing one of that name)."""
    stored = ctl.api.post("/registry/tools", fields)
    ctl.out.show(stored, lambda: ctl.out.line(f"Registered tool {stored['name']} ({stored['image']})."))


@tool.command("remove")
@name_option("tool")
@yes_option
@json_option
@pass_ctl
def remove_tool(ctl: Ctl, name: str, yes: bool) -> None:
    """Remove a tool from the federation's registry (refused while a pipeline uses it)."""
    confirm(f"Remove tool {name} from the federation's registry?", yes)
    result = ctl.api.delete(f"/registry/tools/{segment(name)}")
    ctl.out.show(result, lambda: ctl.out.line(f"Removed tool {name}."))


@tool.command("list-scheduled")
@json_option
@pass_ctl
def list_scheduled(ctl: Ctl) -> None:
    """Scheduled pipeline runs (cron jobs): this instance's and the federation's, with their next run."""
    schedules = [{**s, "scope": "instance"} for s in ctl.api.get("/schedules")]
    try:
        federation = ctl.api.get("/federation/schedules")
    except ApiError as exc:
        if exc.status != 503:  # etcd unreachable: this instance's own schedules are still worth showing
            raise
        federation = []
        ctl.out.note(f"federation-wide schedules are not shown: {exc}")
    for s in federation:
        ticks = s.get("ticks") or []
        schedules.append(
            {**s, "scope": "federation", "last_tick_at": ticks[0].get("due_at") if ticks else None}
        )
    ctl.out.show(
        schedules,
        lambda: ctl.out.table(
            ["id", "scope", "pipeline", "cron", "timezone", "next run", "last tick"],
            [
                [
                    s["id"],
                    s["scope"],
                    s["pipeline"],
                    s["cron"] or f"on {(s.get('trigger') or {}).get('dataset')} advancing",
                    s["timezone"],
                    s.get("next_run_time"),
                    s.get("last_tick_at"),
                ]
                for s in schedules
            ],
            title="scheduled jobs",
        ),
    )


@tool.command("stop")
@click.option("--id", "job_id", required=True, help=ID_HELP)
@yes_option
@json_option
@pass_ctl
def stop_job(ctl: Ctl, job_id: str, yes: bool) -> None:
    """Remove a scheduled job (runs already started finish)."""
    confirm(f"Stop scheduled job {job_id}?", yes)
    result = ctl.api.delete(f"/jobs/{segment(job_id)}")
    ctl.out.show(result, lambda: ctl.out.line(f"Stopped scheduled job {job_id}."))


tool.add_command(accept_command("tool"))
