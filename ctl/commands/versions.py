"""``maoctl pipeline versions`` and ``maoctl pipeline diff``: a pipeline's versions and what changed
between two (``GET /pipeline/{name}/versions[/{n}[/diff]]``)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.text import Text

from ..client import segment
from ..context import Ctl, json_option, name_option, pass_ctl
from ..output import safe, short

VERSION = click.IntRange(1, 2**31 - 1)


@click.command("versions")
@name_option("pipeline")
@click.option("--version", "number", type=VERSION, help="Show this version's definition instead of the list.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="At most this many, newest first."
)
@json_option
@pass_ctl
def versions_command(ctl: Ctl, name: str, number: int | None, limit: int) -> None:
    """A pipeline's versions (one per init that changed it), newest first, with what each changed;
    or one version's definition (--version)."""
    if number is not None:
        found = ctl.api.get(f"/pipeline/{segment(name)}/versions/{number}")
        ctl.out.show(found, lambda: _show_version(ctl, found))
        return
    versions = ctl.api.get(f"/pipeline/{segment(name)}/versions", limit=limit)
    ctl.out.show(
        versions,
        lambda: ctl.out.table(
            ["version", "current", "created", "by", "hash", "changes"],
            [
                [v["version"], v["current"], v.get("created_at"), v.get("created_by"), short(v.get("hash")),
                 v.get("changes")]  # fmt: skip
                for v in versions
            ],
            title=f"versions of {name}",
        ),
    )


def _show_version(ctl: Ctl, found: dict[str, Any]) -> None:
    ctl.out.fields(
        [
            ("pipeline", found["pipeline"]),
            ("version", found["version"]),
            ("current", found.get("current")),
            ("created", found.get("created_at")),
            ("by", found.get("created_by")),
            ("hash", found.get("hash")),
        ]
    )
    ctl.out.line(json.dumps(found.get("definition"), indent=2, ensure_ascii=False))


@click.command("diff")
@name_option("pipeline")
@click.option("--from", "base", type=VERSION, help="The older version (default: the one before --to).")
@click.option("--to", "number", type=VERSION, help="The newer version (default: the current one).")
@json_option
@pass_ctl
def diff_command(ctl: Ctl, name: str, base: int | None, number: int | None) -> None:
    """What changed between two versions of a pipeline: by step and field, then as a unified diff."""
    if number is None:
        newest = ctl.api.get(f"/pipeline/{segment(name)}/versions", limit=1)
        number = next((v["version"] for v in newest), None)
        if number is None:  # the API answers 404 first; an empty list would be a server's bug
            raise click.ClickException(f"pipeline {name} has no versions")
    found = ctl.api.get(f"/pipeline/{segment(name)}/versions/{number}/diff", against=base)
    ctl.out.show(found, lambda: _show_diff(ctl, found))


def _show_diff(ctl: Ctl, found: dict[str, Any]) -> None:
    against = found.get("against")
    title = f"{found['pipeline']}: version {against if against is not None else '(none)'} -> {found['version']}"
    if found.get("same"):
        ctl.out.line(f"{title}: the same definition")
        return
    rows = [["(pipeline)", "changed", c["field"], c.get("before"), c.get("after")] for c in found["pipeline_fields"]]
    for step in found["steps"]:
        fields = step["fields"] or [{"field": "position", "before": step.get("position_before"),
                                      "after": step.get("position_after")}]  # fmt: skip
        for i, c in enumerate(fields):
            rows.append([step["step"] if i == 0 else "", step["change"] if i == 0 else "", c["field"],
                         _value(c.get("before")), _value(c.get("after"))])  # fmt: skip
    ctl.out.table(["step", "change", "field", "before", "after"], rows, title=title)
    for line in (found.get("unified") or "").splitlines():
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else "cyan" if line.startswith("@@") else None
        ctl.out.human_console.print(Text.assemble(safe(line, style or "")), soft_wrap=True)


def _value(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value
