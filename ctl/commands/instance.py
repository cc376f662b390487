"""``maoctl instance``: install an instance, start and stop it, set up its pipelines, check its health."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from .. import stack
from ..client import ApiError
from ..context import Ctl, file_option, json_option, labels_option, pass_ctl
from ..output import status_text
from ..wizard.answers import DEFAULT_DIRECTORY, InstallAnswers, from_file


@click.group()
def instance() -> None:
    """This instance: install it, pick its pipelines, see whether it is healthy."""


@instance.command("install")
@file_option(
    "--answers",
    "answers_file",
    "Take every answer from this JSON or YAML file (no questions; defaults fill the gaps).",
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
@click.option(
    "--single-host",
    "--single_host",
    "single_host",
    is_flag=True,
    default=None,
    help="A federation tried on this one machine: the IP is a loopback address (127.0.0.2, 127.0.0.3, ...), "
    "joining included, and nothing listens beyond it.",
)
@click.option("--git-email", "--git_email", "git_email", help="E-mail for this instance's git commits.")
@click.option("--ssh-dir", "--ssh_dir", "ssh_dir", help="Folder with the SSH key for git remotes.")
@click.option("--api-port", type=click.IntRange(1, 65535), help="The orchestrator's port (default 8080).")
@click.option(
    "--postgres-port", type=click.IntRange(1, 65535), help="PostgreSQL's port on 127.0.0.1 (default 5433)."
)
@click.option(
    "--executor-port",
    type=click.IntRange(1, 65535),
    help="Unused: the executor listens on a socket in the data folder (accepted so older commands work).",
)
@click.option("--etcd-client-port", type=click.IntRange(1, 65535), help="etcd's client port (default 2379).")
@click.option("--etcd-peer-port", type=click.IntRange(1, 65535), help="etcd's peer port (default 2380).")
@labels_option("Instance label (repeatable).")
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
# '/': pass_ctl hands ctl by position (see add_tool in tool.py).
def install(ctl: Ctl, /, answers_file: Path | None, non_interactive: bool, **flags: Any) -> None:
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


def _directory_option(f: Any) -> Any:
    return click.option(
        "--dir",
        "--directory",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"The install directory (default $MAO_INSTANCE_DIR, else {DEFAULT_DIRECTORY}).",
    )(f)


def _install_dir(directory: Path | None) -> Path:
    chosen = directory or Path(os.environ.get("MAO_INSTANCE_DIR") or DEFAULT_DIRECTORY)
    return chosen.expanduser().resolve()


def _stack_error(exc: stack.StackError) -> click.ClickException:
    return click.ClickException(str(exc))


def _show_states(ctl: Ctl, directory: Path, found: list[stack.ServiceState]) -> None:
    data = {
        "directory": str(directory),
        "services": [
            {"service": s.service, "container": s.container, "state": s.state, "health": s.health}
            for s in found
        ],
        "ready": bool(found) and all(s.ready for s in found),
    }

    def human() -> None:
        ctl.out.table(
            ["service", "container", "state", "health"],
            [
                [s.service, s.container, s.state, Text(str(s.health), style="green" if s.ready else "red")]
                for s in found
            ],
            title=str(directory),
        )

    ctl.out.show(data, human)


@instance.command("up")
@_directory_option
@click.option("--wait/--no-wait", default=True, help="Wait until every service is healthy (default).")
@click.option(
    "--timeout", type=click.FloatRange(1), default=600, show_default=True, help="Seconds --wait waits."
)
@json_option
@pass_ctl
def up(ctl: Ctl, directory: Path | None, wait: bool, timeout: float) -> None:
    """Start the instance's compose stack (docker compose v2 or docker-compose v1, whichever works)."""
    where = _install_dir(directory)
    try:
        stack.run(where, "up", "-d")
        found = stack.wait_ready(where, timeout) if wait else stack.states(where)
    except stack.StackError as exc:
        raise _stack_error(exc) from None
    _show_states(ctl, where, found)
    if wait and not all(s.ready for s in found):
        ctl.out.note(
            f"not healthy after {timeout:.0f} s: see `docker logs` of the containers above", style="red"
        )
        raise click.exceptions.Exit(1)


@instance.command("down")
@_directory_option
@json_option
@pass_ctl
def down(ctl: Ctl, directory: Path | None) -> None:
    """Stop and remove the stack's containers (the data folders stay)."""
    where = _install_dir(directory)
    try:
        stack.run(where, "down")
    except stack.StackError as exc:
        raise _stack_error(exc) from None
    ctl.out.show({"directory": str(where), "down": True}, lambda: ctl.out.line(f"Stopped {where}."))


@instance.command("status")
@_directory_option
@json_option
@pass_ctl
def status(ctl: Ctl, directory: Path | None) -> None:
    """Health of the API, etcd, the database and the executor (exit 1 when degraded).

    With --dir: the state and health of the install's containers instead (exit 1 unless all healthy).
    """
    if directory is not None:
        where = _install_dir(directory)
        try:
            found = stack.states(where)
        except stack.StackError as exc:
            raise _stack_error(exc) from None
        _show_states(ctl, where, found)
        if not found or not all(s.ready for s in found):
            raise click.exceptions.Exit(1)
        return
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
