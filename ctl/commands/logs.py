"""``maoctl pipeline logs``: the full log of one attempt of a step (``GET /runs/{id}/log``)."""

from __future__ import annotations

import sys

import click

from ..client import segment
from ..context import Ctl, check_name, pass_ctl
from ..safe_text import LogStream


@click.command("logs")
@click.option("--id", "run_id", required=True, help="The run's id (from `maoctl pipeline runs`).")
@click.option("--step", required=True, callback=check_name("step name"), help="The step's name.")
@click.option("--attempt", type=click.IntRange(1), help="This attempt (default: the step's latest).")
@click.option("--shard", type=click.IntRange(1), help="A fan-out step's shard (1-based; required for one).")
@click.option("--follow", "-f", is_flag=True, help="While the attempt runs: stream its log until it ends.")
@click.option(
    "--raw",
    is_flag=True,
    help="The log's bytes unchanged, control sequences included: only into a file or a pipe, never a terminal.",
)
@pass_ctl
def logs_command(
    ctl: Ctl, run_id: str, step: str, attempt: int | None, shard: int | None, follow: bool, raw: bool
) -> None:
    """Print the full log of a step's attempt (secrets masked). A tool's terminal control sequences
    (colours, cursor moves, window titles) are removed and other control characters shown as escapes
    (\x07), so its output cannot drive your terminal; --raw writes the bytes as they are, to a file or
    a pipe."""
    if raw and sys.stdout.isatty():
        raise click.UsageError("--raw writes control sequences as the tool wrote them: redirect it to a file")
    params: dict[str, str] = {"step": step}
    if attempt is not None:
        params["attempt"] = str(attempt)
    if shard is not None:
        params["shard"] = str(shard)
    if follow:
        params["follow"] = "1"
    out = sys.stdout.buffer
    stream = LogStream()
    for chunk in ctl.api.stream(f"/runs/{segment(run_id)}/log", params, follow=follow):
        out.write(chunk if raw else stream.feed(chunk).encode())
        out.flush()
    if not raw:
        out.write(stream.close().encode())
        out.flush()
