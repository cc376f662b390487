"""``maoctl``: the root command group, its global options, and the one place errors become messages."""

from __future__ import annotations

import os
import sys

import click

from orchestrator import __version__

from .client import DEFAULT_TIMEOUT, DEFAULT_URL, url_problem
from .commands import (
    backend,
    dataset,
    federation,
    gateway,
    instance,
    lock,
    marketplace,
    pipeline,
    registry,
    repo,
    tool,
)
from .context import Ctl
from .safe_text import clean


def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if problem := url_problem(value):
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


class Maoctl(click.Group):
    """The root group: every error message a command raises is shown through ``safe_text`` (it may
    quote a server, a tool or a file), wherever in maoctl it was raised."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = clean(exc.message)  # type: ignore[misc]  # Final in the stubs, a plain attribute
            raise


@click.group(cls=Maoctl, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    envvar="MAO_URL",
    default=DEFAULT_URL,
    show_default=True,
    callback=_check_url,
    help="The orchestrator's API (env MAO_URL): an http(s) URL, or unix:///path/to/api.sock. For a URL "
    "on this host without --token, maoctl goes through the local orchestrator's socket "
    "$MAO_DATA_DIR/api.sock with its token file.",
)
@click.option(
    "--token",
    envvar="MAO_API_TOKEN",
    help="The API token (env MAO_API_TOKEN), sent to --url as it is. Without it, for a URL on this host, "
    "maoctl uses the local orchestrator's token file, $MAO_DATA_DIR/api-token (default "
    "~/.mao/data/api-token), and sends it only through that orchestrator's socket.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one JSON document on stdout.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for an answer (a waiting `pipeline run` waits for the run's end).",
)
@click.version_option(__version__, prog_name="maoctl")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None, as_json: bool, timeout: float) -> None:
    """Manage a MAO instance: tools, datasets, pipelines, runs, and the federation it belongs to.

    Start with `maoctl instance install` (writes a ready-to-start instance), then
    `maoctl instance init` (picks pipelines from the marketplace).
    """
    ctx.obj = Ctl(url, token or None, as_json, timeout)


for group in (tool.tool, dataset.dataset, pipeline.pipeline, repo.repo, instance.instance):
    cli.add_command(group)
for group in (
    federation.federation,
    lock.lock,
    marketplace.marketplace,
    gateway.gateway,
    registry.registry,
    backend.backend,
):
    cli.add_command(group)


def main(argv: list[str] | None = None) -> None:
    """The console script. click renders usage errors (exit 2) and ClickExceptions (exit 1)."""
    try:
        cli.main(args=argv, prog_name="maoctl", standalone_mode=True)
    except Exception as exc:
        # Anything else is a bug in maoctl; the operator still gets one line, developers the traceback.
        if os.environ.get("MAO_DEBUG"):
            raise
        click.echo(
            clean(
                f"Error: maoctl failed unexpectedly ({type(exc).__name__}: {exc}); "
                "run it again with MAO_DEBUG=1 to see where"
            ),
            err=True,
        )
        sys.exit(1)
