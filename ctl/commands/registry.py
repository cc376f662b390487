"""``maoctl registry``: who owns a registration; handing one over, claiming one nobody owns. And the
``accept`` commands of ``tool``, ``dataset`` and ``pipeline`` (changes to what a pipeline pinned)."""

from __future__ import annotations

from typing import Any

import click

from ..client import segment
from ..context import Ctl, check_name, confirm, json_option, name_option, pass_ctl, yes_option

KINDS = {"tool": "tools", "dataset": "datasets", "pipeline": "pipelines"}
PROOF = {
    "signature": "signed with its certificate (verified against the federation CA)",
    "claim": "a claim: etcd is reached without TLS, so anyone who reaches it could have written it",
    "none": "registered before registrations had owners: nobody owns it (claim it: maoctl registry claim)",
}


def kind_option(f: Any) -> Any:
    return click.option(
        "--kind", type=click.Choice(sorted(KINDS)), required=True, help="What the registration is."
    )(f)


@click.group()
def registry() -> None:
    """Ownership of the federation's registrations (tools, datasets, pipelines)."""


def _show_owner(ctl: Ctl, found: dict[str, Any]) -> None:
    ctl.out.show(
        found,
        lambda: ctl.out.fields(
            [
                ("owner", found.get("owner") or "nobody"),
                ("revision", found.get("revision")),
                ("sealed by", found.get("signed_by")),
                ("sealed at", found.get("signed_at")),
                ("proof", PROOF.get(str(found.get("proof")), found.get("proof"))),
            ],
            title=f"{found.get('kind')} {found.get('name')}",
        ),
    )


@registry.command("owner")
@kind_option
@name_option("registration")
@click.option(
    "--to",
    "to",
    callback=check_name("instance name"),
    help="Hand the registration over to this instance (only its owner can).",
)
@yes_option
@json_option
@pass_ctl
def owner(ctl: Ctl, kind: str, name: str, to: str | None, yes: bool) -> None:
    """Show who owns a registration, or (with --to) hand it over to another instance."""
    path = f"/registry/{KINDS[kind]}/{segment(name)}/owner"
    if to is None:
        _show_owner(ctl, ctl.api.get(path))
        return
    confirm(f"Hand {kind} {name} over to {to}? Only {to} can change or delete it afterwards.", yes)
    _show_owner(ctl, ctl.api.post(path, {"owner": to}))


@registry.command("claim")
@kind_option
@name_option("registration")
@json_option
@pass_ctl
def claim(ctl: Ctl, kind: str, name: str) -> None:
    """Claim a registration made before registrations had owners (first come, once)."""
    me = ctl.api.get("/")["instance"]
    _show_owner(ctl, ctl.api.post(f"/registry/{KINDS[kind]}/{segment(name)}/owner", {"owner": me}))


def show_changes(ctl: Ctl, changes: list[dict[str, Any]], title: str) -> None:
    ctl.out.table(
        ["registration", "what", "accepted before", "registered now"],
        [[f"{c['kind']} {c['name']}", c["what"], c.get("pinned"), c.get("current")] for c in changes],
        title=title,
    )


def accept_command(kind: str) -> click.Command:
    """``maoctl tool accept`` / ``maoctl dataset accept``: one registration, in every pipeline here."""

    @click.command("accept")
    @name_option(kind)
    @yes_option
    @json_option
    @pass_ctl
    def accept(ctl: Ctl, name: str, yes: bool) -> None:
        path = f"/registry/{KINDS[kind]}/{segment(name)}/accept"
        preview = ctl.api.post(path, {"dry_run": True})
        scopes: dict[str, list[dict[str, Any]]] = preview.get("scopes") or {}
        if not scopes:
            ctl.out.show(preview, lambda: ctl.out.line(f"Nothing to accept: {kind} {name} is as pinned."))
            return
        if not ctl.out.as_json:
            for scope, changes in scopes.items():
                show_changes(ctl, changes, f"changed since pipeline {scope} accepted it")
        confirm(f"Accept {kind} {name} as registered now, for {', '.join(scopes)}?", yes)
        done = ctl.api.post(path, {})
        ctl.out.show(done, lambda: ctl.out.line(f"Accepted {kind} {name} for {', '.join(scopes)}."))

    accept.__doc__ = (
        f"Accept the {kind}'s registration as it is now, in every pipeline of this instance that "
        "pinned it (shows what changed, asks first)."
    )
    accept.help = accept.__doc__
    return accept


@click.command("accept")
@name_option("pipeline")
@yes_option
@json_option
@pass_ctl
def accept_pipeline(ctl: Ctl, name: str, yes: bool) -> None:
    """Accept the changed registrations the pipeline uses (shows what changed, asks first)."""
    path = f"/pipeline/{segment(name)}/accept"
    preview = ctl.api.post(path, {"dry_run": True})
    changes = preview.get("changes") or []
    if not changes:
        ctl.out.show(preview, lambda: ctl.out.line(f"Nothing to accept: {name} uses what it pinned."))
        return
    if not ctl.out.as_json:
        show_changes(ctl, changes, f"changed since {name} accepted them")
    confirm(f"Accept these changes for pipeline {name}? Its next runs use them.", yes)
    done = ctl.api.post(path, {})
    ctl.out.show(done, lambda: ctl.out.line(f"Accepted {len(changes)} change(s) for pipeline {name}."))
