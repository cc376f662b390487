"""``maoctl dataset audit`` and ``maoctl dataset audit-result``: peer validation of one file."""

from __future__ import annotations

import time
from typing import Any

import click

from ..client import segment
from ..context import Ctl, check_name, json_option, pass_ctl
from ..output import short

POLL_EVERY = 1.0
# How long after the deadline to keep asking: the auditor fetches the large copies and scores them.
DECIDE_GRACE = 120.0
OUTCOMES = {
    "winner": "one copy wins",
    "joint_winners": "identical copies win together",
    "draw": "a draw: equally strange copies differ, a person has to look",
    "no_candidates": "no instance had a copy of the file",
}


@click.command("audit")
@click.option("--name", required=True, callback=check_name("dataset name"), help="The dataset to audit.")
@click.option("--file", "path", required=True, help="The file's path inside the dataset, e.g. data/now.json.")
@click.option(
    "--wait",
    type=click.FloatRange(5, 3600),
    default=30,
    show_default=True,
    help="Seconds the instances have to answer before the audit is decided.",
)
@json_option
@pass_ctl
def audit_command(ctl: Ctl, name: str, path: str, wait: float) -> None:
    """Ask every live instance for its copy of a file and decide which one to trust; waits for the result."""
    started = ctl.api.post("/audits", {"dataset": name, "file": path, "wait": wait})
    ctl.out.note(
        f"Audit {started['id']} of {name}:{path} started; the instances answer until {started['deadline']} "
        f"({wait:g} s)."
    )
    result = _wait_for(ctl, started["id"], wait + DECIDE_GRACE)
    ctl.out.show(result, lambda: show_result(ctl, result))


@click.command("audit-result")
@click.option("--id", "audit_id", required=True, help="The audit's id (printed by `maoctl dataset audit`).")
@json_option
@pass_ctl
def audit_result_command(ctl: Ctl, audit_id: str) -> None:
    """Show an audit: still pending, or its result (kept 30 days)."""
    result = ctl.api.get(f"/audits/{segment(audit_id)}")
    ctl.out.show(result, lambda: show_result(ctl, result))


def _wait_for(ctl: Ctl, audit_id: str, patience: float) -> dict[str, Any]:
    give_up = time.monotonic() + patience
    while True:
        found: dict[str, Any] = ctl.api.get(f"/audits/{segment(audit_id)}")
        if found.get("status") == "decided":
            return found
        if time.monotonic() >= give_up:
            raise click.ClickException(
                f"audit {audit_id} is still not decided; see later with `maoctl dataset audit-result --id {audit_id}`"
            )
        time.sleep(POLL_EVERY)


def show_result(ctl: Ctl, result: dict[str, Any]) -> None:
    where = f"{result.get('dataset')}:{result.get('file')}"
    if result.get("status") != "decided":
        ctl.out.line(
            f"audit {result.get('id')} of {where}: pending until {result.get('deadline')} "
            f"({result.get('answers', 0)} answer(s) so far)"
        )
        return
    outcome = result.get("outcome", "")
    ctl.out.line(f"audit {result.get('id')} of {where}: {OUTCOMES.get(outcome, outcome)}", style="bold")
    winners = {(w["instance"], w["branch"]) for w in result.get("winners", [])}
    drawn = {(w["instance"], w["branch"]) for w in result.get("drawn", [])}
    ctl.out.table(
        ["instance", "branch", "commit", "entries", "strangeness", "verdict"],
        [
            [
                c["instance"],
                c["branch"],
                short(c.get("commit")),
                c.get("entries"),
                c.get("strangeness"),
                _verdict((c["instance"], c["branch"]), winners, drawn),
            ]
            for c in result.get("candidates", [])
        ],
        title="candidates (least strange first)",
    )
    if result.get("absent"):
        ctl.out.table(
            ["instance", "branch", "why not a candidate"],
            [[a.get("instance"), a.get("branch"), a.get("reason")] for a in result["absent"]],
            title="answers without a usable copy",
        )


def _verdict(who: tuple[str, str], winners: set[tuple[str, str]], drawn: set[tuple[str, str]]) -> str:
    if who in winners:
        return "wins"
    if who in drawn:
        return "draw"
    return "loses"
