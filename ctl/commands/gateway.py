"""``maoctl gateway key``: the keys external tools use for /write, /read and /inspect on this instance."""

from __future__ import annotations

import click

from ..client import segment
from ..context import Ctl, confirm, json_option, name_option, pass_ctl, yes_option


@click.group()
def gateway() -> None:
    """The gateway external tools write raw entries to and read insights from."""


@gateway.group("key")
def key() -> None:
    """Gateway keys: they may call POST /write, /read and /inspect on this instance, nothing else."""


@key.command("create")
@name_option("gateway key", help="A name for the key (who or what uses it).")
@json_option
@pass_ctl
def create_key(ctl: Ctl, name: str) -> None:
    """Create a key; it is shown this once (only its hash is kept)."""
    created = ctl.api.post("/gateway/keys", {"name": name})

    def human() -> None:
        ctl.out.line(f"Created gateway key {created['name']}:")
        ctl.out.line(created["key"], style="bold")
        ctl.out.note(
            "Keep it now: it is not shown again. Tools send it as 'Authorization: Bearer <key>'; "
            f"revoke it with `maoctl gateway key revoke --name {created['name']}`."
        )

    ctl.out.show(created, human)


@key.command("list")
@json_option
@pass_ctl
def list_keys(ctl: Ctl) -> None:
    """The gateway keys of this instance: name, created, last used (never the keys themselves)."""
    keys = ctl.api.get("/gateway/keys")
    ctl.out.show(
        keys,
        lambda: ctl.out.table(
            ["name", "created", "last used"],
            [[k["name"], k.get("created_at"), k.get("last_used_at")] for k in keys],
            title="gateway keys",
        ),
    )


@key.command("revoke")
@name_option("gateway key")
@yes_option
@json_option
@pass_ctl
def revoke_key(ctl: Ctl, name: str, yes: bool) -> None:
    """Revoke a key: the tools using it get 401 from then on."""
    confirm(f"Revoke gateway key {name}? Tools using it will be refused.", yes)
    result = ctl.api.delete(f"/gateway/keys/{segment(name)}")
    ctl.out.show(result, lambda: ctl.out.line(f"Revoked gateway key {name}."))
