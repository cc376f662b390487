"""``maoctl pipeline logs``: the full log of one attempt of a step (``GET /runs/{id}/log``)."""

from __future__ import annotations

import sys

import click

from ..client import segment
from ..context import Ctl, check_name, pass_ctl


@click.command("logs")
@click.option("--id", "run_id", required=True, help="The run's id (from `maoctl pipeline runs`).")
@click.option("--step", required=True, callback=check_name("step name"), help="The step's name.")
@click.option("--attempt", type=click.IntRange(1), help="This attempt (default: the step's latest).")
@click.option("--shard", type=click.IntRange(1), help="A fan-out step's shard (1-based; required for one).")
@click.option("--follow", "-f", is_flag=True, help="While the attempt runs: stream its log until it ends.")
@pass_ctl
def logs_command(ctl: Ctl, run_id: str, step: str, attempt: int | None, shard: int | None, follow: bool) -> None:
    """Print the full log of a step's attempt (secrets masked), as the step wrote it."""
    params: dict[str, str] = {"step": step}
    if attempt is not None:
        params["attempt"] = str(attempt)
    if shard is not None:
        params["shard"] = str(shard)
    if follow:
        params["follow"] = "1"
    out = sys.stdout.buffer
    for chunk in ctl.api.stream(f"/runs/{segment(run_id)}/log", params, follow=follow):
        out.write(chunk)
        out.flush()
