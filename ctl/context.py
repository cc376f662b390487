"""What every command shares: the API client, the output mode, and reusable option decorators."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click

from executor.wire.names import name_problem

from .client import Client
from .output import Output

F = TypeVar("F", bound=Callable[..., Any])


class Ctl:
    """The root group's state, handed to every command through ``@pass_ctl``."""

    def __init__(self, url: str, token: str | None, as_json: bool, timeout: float) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.out = Output(as_json)

    @cached_property
    def api(self) -> Client:
        return Client(self.url, self.token, self.timeout)


pass_ctl = click.make_pass_decorator(Ctl)


def check_name(what: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback refusing names the orchestrator would refuse (so the mistake is a usage error)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and (problem := name_problem(value, what)):
            raise click.BadParameter(problem, ctx=ctx, param=param)
        return value

    return callback


def name_option(what: str, required: bool = True, help: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--name",
        required=required,
        callback=check_name(f"{what} name"),
        help=help or f"The {what}'s name.",
    )


def parse_labels(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """A click callback for repeatable ``--label key=value`` options."""
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip() or "," in value:
            raise click.BadParameter(f"{value!r} is not key=value", ctx=ctx, param=param)
        labels[key.strip()] = val.strip()
    return labels


def labels_option(help: str) -> Callable[[F], F]:
    """Repeatable ``--label KEY=VALUE``, handed to the command as ``labels``, a dict."""
    return click.option(
        "--label", "labels", multiple=True, callback=parse_labels, metavar="KEY=VALUE", help=help
    )


def file_option(name: str, dest: str, help: str) -> Callable[[F], F]:
    """An option naming a file to read (it must exist), handed to the command as a Path."""
    return click.option(name, dest, type=click.Path(exists=True, dir_okay=False, path_type=Path), help=help)


def yes_option(f: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(f)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    ctl = ctx.find_object(Ctl)
    if value and ctl is not None:
        ctl.out.as_json = True


def json_option(f: F) -> F:
    """``--json`` after the command works like the global one (``maoctl tool get --json``)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_json,
        help="Print the result as JSON on stdout.",
    )(f)


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive action; ``--yes`` skips the question; no (or no answer) aborts, exit 1."""
    if not yes:
        click.confirm(question, abort=True, err=True)
