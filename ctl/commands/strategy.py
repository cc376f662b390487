"""``maoctl pipeline strategy NAME STEP [--force TOOL | --reset]``: a step's strategy watcher."""

from __future__ import annotations

from typing import Any

import click

from ..client import CtlError, segment
from ..context import Ctl, check_name, json_option, pass_ctl


@click.command("strategy")
@click.argument("name", callback=check_name("pipeline name"))
@click.argument("step", callback=check_name("step name"))
@click.option(
    "--force", "tool", callback=check_name("tool name"), help="Start the step's runs with this tool."
)
@click.option(
    "--reset", is_flag=True, help="Forget the watcher's counts: every tool healthy, the main active."
)
@json_option
@pass_ctl
def strategy_command(ctl: Ctl, name: str, step: str, tool: str | None, reset: bool) -> None:
    """Show a step's strategy (its active tool, since when and why, each tool's health), force one of
    its tools (--force) or reset its watcher (--reset)."""
    if tool is not None and reset:
        raise click.UsageError("give either --force TOOL or --reset, not both")
    if tool is not None or reset:
        body: dict[str, Any] = {"force": tool} if tool is not None else {"reset": True}
        state = ctl.api.post(f"/pipeline/{segment(name)}/strategy/{segment(step)}", body)
    else:
        found = ctl.api.get(f"/pipeline/{segment(name)}")
        strategies = found.get("strategies") or {}
        if step not in strategies:
            raise CtlError(f"step {step!r} of pipeline {name!r} has no strategy")
        state = {"pipeline": name, "step": step, **strategies[step]}
    ctl.out.show(state, lambda: _show(ctl, state))


def _show(ctl: Ctl, state: dict[str, Any]) -> None:
    ctl.out.fields(
        [
            ("pipeline", state["pipeline"]),
            ("step", state["step"]),
            ("active", state["active"]),
            ("since", state["since"]),
            ("why", state["reason"]),
            ("forced", state.get("forced")),
        ]
    )
    ctl.out.table(
        ["tool", "healthy", "consecutive failures", "abandoned at", "probed at"],
        [
            [t["tool"], t["healthy"], t["consecutive_failures"], t.get("abandoned_at"), t.get("probed_at")]
            for t in state["tools"]
        ],
    )
