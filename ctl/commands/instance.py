"""``maoctl instance``: install an instance, set up its pipelines, check its health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from ..client import ApiError
from ..context import Ctl, json_option, parse_labels, pass_ctl
from ..output import status_text
from ..wizard.answers import InstallAnswers, from_file


@click.group()
def instance() -> None:
    """This instance: install it, pick its pipelines, see whether it is healthy."""


@instance.command("install")
@click.option(
    "--answers",
    "answers_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Take every answer from this JSON or YAML file (no questions; defaults fill the gaps).",
)
@click.option("--non-interactive", is_flag=True, help="Ask nothing: flags and defaults only.")
@click.option("--join/--no-join", default=None, help="Join an existing federation (or found/stand alone).")
@click.option(
    "--federation", help="The federation joined (informational; its contacts come from the marketplace)."
)
@click.option(
    "--join-bundle",
    "--join_bundle",
    "join_bundle",
    help="When joining: the join bundle the federation's operator sent (certificates, ETCD_INITIAL_CLUSTER).",
)
@click.option(
    "--initial-cluster",
    "initial_cluster",
    help="When joining: the ETCD_INITIAL_CLUSTER the operator sent (the join bundle holds it already).",
)
@click.option("--dir", "--directory", "directory", help="Install directory (default ~/mao-instance).")
@click.option("--name", help="Instance name (default: this host's name).")
@click.option("--ip", help="The IP other instances reach this one on.")
@click.option("--git-email", "--git_email", "git_email", help="E-mail for this instance's git commits.")
@click.option("--ssh-dir", "--ssh_dir", "ssh_dir", help="Folder with the SSH key for git remotes.")
@click.option("--api-port", type=click.IntRange(1, 65535), help="The orchestrator's port (default 8080).")
@click.option(
    "--postgres-port", type=click.IntRange(1, 65535), help="PostgreSQL's port on 127.0.0.1 (default 5433)."
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    callback=parse_labels,
    metavar="KEY=VALUE",
    help="Instance label (repeatable).",
)
@click.option(
    "--yes",
    "-y",
    "overwrite",
    is_flag=True,
    default=None,
    help="Overwrite an earlier install without asking.",
)
@json_option
@pass_ctl
def install(ctl: Ctl, answers_file: Path | None, non_interactive: bool, **flags: Any) -> None:
    """Write a ready-to-start instance: docker-compose.yaml, mao.env (secrets), data folders."""
    from ..wizard.install import run_install

    values: dict[str, Any] = from_file(answers_file) if answers_file else {}
    values.update({key: value for key, value in flags.items() if value not in (None, {})})
    try:
        answers = InstallAnswers(**values)
    except TypeError as exc:
        raise click.BadParameter(str(exc)) from None
    interactive = not (answers_file or non_interactive)
    run_install(ctl, answers, set(values), interactive)


@instance.command("init")
@pass_ctl
def init(ctl: Ctl) -> None:
    """Pick pipelines (marketplace, federation, this instance) and set them up here."""
    from ..wizard.init import run_init

    run_init(ctl)


@instance.command("status")
@json_option
@pass_ctl
def status(ctl: Ctl) -> None:
    """Health of the API, etcd, the database and the executor (exit 1 when degraded)."""
    try:
        health: dict[str, Any] = ctl.api.get("/health")
    except ApiError as exc:
        # 503 still carries the checks: show them rather than only "degraded".
        if exc.status != 503 or "status" not in exc.body:
            raise
        health = exc.body

    def human() -> None:
        parts = [(part, health.get(part)) for part in ("etcd", "database", "executor")]
        ctl.out.fields(
            [
                ("instance", health.get("instance")),
                ("API", Text(f"ok ({ctl.url})", style="green")),
                *[
                    (part, Text(str(value), style="green" if value == "ok" else "red"))
                    for part, value in parts
                ],
                ("status", status_text(health.get("status"))),
            ]
        )

    ctl.out.show(health, human)
    if health.get("status") != "ok":
        raise click.exceptions.Exit(1)
