"""``maoctl lock``: the federation's dataset locks (who is merging into which ground-truth)."""

from __future__ import annotations

import click

from ..context import Ctl, json_option, pass_ctl


@click.group()
def lock() -> None:
    """Dataset locks held in the federation (they expire with their holder's lease)."""


@lock.command("list")
@json_option
@pass_ctl
def list_locks(ctl: Ctl) -> None:
    """The locks held right now: dataset, instance, purpose, since when."""
    locks = ctl.api.get("/locks")
    ctl.out.show(
        locks,
        lambda: ctl.out.table(
            ["dataset", "instance", "purpose", "acquired", "key"],
            [
                [
                    lk.get("dataset"),
                    lk.get("instance"),
                    lk.get("purpose"),
                    lk.get("acquired_at"),
                    lk.get("key"),
                ]
                for lk in locks
            ],
            title="locks",
        ),
    )
