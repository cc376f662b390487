"""``maoctl repo``: bare git repositories on this instance (masters for local-only datasets)."""

from __future__ import annotations

import click

from ..context import Ctl, json_option, name_option, pass_ctl


@click.group()
def repo() -> None:
    """Bare git repositories kept by this instance."""


@repo.command("add")
@name_option("repository")
@json_option
@pass_ctl
def add_repo(ctl: Ctl, name: str) -> None:
    """Create a bare repository on this instance (idempotent) and print its path."""
    result = ctl.api.post("/bare-repo/init", {"name": name})

    def human() -> None:
        verb = "Created" if result.get("created") else "Already there:"
        ctl.out.line(f"{verb} bare repository {name} at {result['path']}")
        ctl.out.line(
            f"Register it as a dataset with: maoctl dataset add --name {name} --git-url {result['path']}"
        )

    ctl.out.show(result, human)
