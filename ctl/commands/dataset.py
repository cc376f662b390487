"""``maoctl dataset``: the federation's dataset registry (git repositories and their node branches)."""

from __future__ import annotations

import click

from ..client import segment
from ..context import Ctl, confirm, json_option, name_option, pass_ctl, yes_option
from .audit import audit_command, audit_result_command
from .registry import accept_command
from .tool import show_registered


@click.group()
def dataset() -> None:
    """Datasets: git repositories the federation writes into, each with a ground-truth branch."""


dataset.add_command(audit_command)
dataset.add_command(audit_result_command)


@dataset.command("get")
@name_option("dataset", required=False, help="Show this dataset only.")
@json_option
@pass_ctl
def get_dataset(ctl: Ctl, name: str | None) -> None:
    """List the registered datasets, or show one."""
    show_registered(
        ctl, "dataset", name, ["name", "master", "node branches"], lambda d: [d["name"], d["master"], d.get("nodes")]
    )


@dataset.command("add")
@name_option("dataset")
@click.option(
    "--git-url",
    "--git_url",
    "git_url",
    required=True,
    help="The master repository: a git URL every instance can reach, or a local path (local-only).",
)
@json_option
@pass_ctl
def add_dataset(ctl: Ctl, name: str, git_url: str) -> None:
    """Register a dataset (re-registering keeps the node branches already known)."""
    stored = ctl.api.post("/registry/datasets", {"name": name, "body": {"master": git_url, "nodes": []}})
    ctl.out.show(stored, lambda: ctl.out.line(f"Registered dataset {name} ({stored['master']})."))


@dataset.command("remove")
@name_option("dataset")
@yes_option
@json_option
@pass_ctl
def remove_dataset(ctl: Ctl, name: str, yes: bool) -> None:
    """Remove a dataset from the registry (the repository itself is kept; refused while in use)."""
    confirm(f"Remove dataset {name} from the federation's registry?", yes)
    result = ctl.api.delete(f"/registry/datasets/{segment(name)}")
    ctl.out.show(result, lambda: ctl.out.line(f"Removed dataset {name}."))


dataset.add_command(accept_command("dataset"))
