"""``maoctl federation``: the instances of the federation and the etcd cluster they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import pki
from ..client import segment
from ..cluster import peer_url_problem
from ..context import Ctl, confirm, json_option, name_option, pass_ctl, yes_option
from ..join_bundle import issue_bundle, save_bundle

# Where `maoctl instance install` keeps a new federation's CA with its default install directory.
DEFAULT_CA_DIR = "~/mao-instance/ca"


@click.group()
def federation() -> None:
    """The federation: its instances and the members of its etcd cluster."""


@federation.command("members")
@json_option
@pass_ctl
def members(ctl: Ctl) -> None:
    """The instances alive in the federation and the etcd cluster's members."""
    found = ctl.api.get("/federation/members")

    def human() -> None:
        ctl.out.table(
            ["instance", "API", "version", "labels", "started"],
            [
                [i["name"], i.get("api_url"), i.get("version"), i.get("labels"), i.get("started_at")]
                for i in found.get("instances", [])
            ],
            title="instances",
        )
        ctl.out.table(
            ["etcd member", "id", "peer URLs", "client URLs", "healthy"],
            [
                [
                    m.get("name") or "(not started yet)",
                    m.get("id"),
                    m.get("peer_urls"),
                    m.get("client_urls"),
                    m.get("healthy"),
                ]
                for m in found.get("etcd", [])
            ],
            title="etcd cluster",
        )

    ctl.out.show(found, human)


def _check_peer_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if problem := peer_url_problem(value):
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value.strip()


@federation.command("add-member")
@name_option("instance", help="The new instance's name (what it chose in `maoctl instance install`).")
@click.option(
    "--peer-url",
    "--peer_url",
    "peer_url",
    required=True,
    callback=_check_peer_url,
    help="The new instance's etcd peer URL, e.g. https://10.0.0.5:2380 (http:// for a plain-HTTP federation).",
)
@click.option(
    "--ca-dir",
    "ca_dir",
    envvar="MAO_CA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_CA_DIR,
    show_default=True,
    help="The federation CA (ca.crt, ca.key) that issues the newcomer's certificates [env MAO_CA_DIR].",
)
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the join bundle (default: ./<name>-join.json).",
)
@json_option
@pass_ctl
def add_member(ctl: Ctl, name: str, peer_url: str, ca_dir: Path, bundle_path: Path | None) -> None:
    """Add a joining instance to the etcd cluster and write its join bundle (certificates issued by the
    federation CA, and the ETCD_INITIAL_CLUSTER it starts with) for its operator."""
    tls = peer_url.startswith("https://")
    authority = None
    path = (bundle_path or Path(f"{name}-join.json")).expanduser()
    if tls:
        # Checked before etcd changes: a member added without its bundle could never start.
        try:
            authority = pki.load_authority(ca_dir.expanduser())
        except pki.PkiError as exc:
            raise click.ClickException(f"{exc}; or give --ca-dir / MAO_CA_DIR") from None
        if not path.resolve().parent.is_dir() or path.is_dir():
            raise click.ClickException(f"cannot write the join bundle to {path}: no such folder")
    result = ctl.api.post("/federation/etcd-members", {"name": name, "peer_url": peer_url})
    if authority is not None:
        bundle = issue_bundle(authority, name, peer_url, result["ETCD_INITIAL_CLUSTER"])
        save_bundle(bundle, path)
        result = {**result, "join_bundle": str(path.resolve())}
    ctl.out.show(result, lambda: _explain_added(ctl, name, peer_url, result))


def _explain_added(ctl: Ctl, name: str, peer_url: str, result: dict[str, Any]) -> None:
    ctl.out.line(f"Added {name} ({peer_url}) to the federation's etcd cluster.")
    if result.get("join_bundle"):
        ctl.out.line(
            f"Send {result['join_bundle']} to its operator (it holds private keys: scp or encrypted mail, "
            "never a public channel); `maoctl instance install --join` asks for it."
        )
    else:
        ctl.out.line("Send this line to its operator; `maoctl instance install` asks for it:")
    ctl.out.line(f"  ETCD_INITIAL_CLUSTER={result['ETCD_INITIAL_CLUSTER']}", style="bold")
    if result.get("writes_pause_until_started"):
        ctl.out.line(
            f"Writes to the federation now pause until {name}'s etcd member starts: the cluster has "
            "two members and needs both for quorum.",
            style="bold",
        )
    ctl.out.line(
        "Until that instance's etcd starts, the cluster counts it as missing: "
        f"if it never joins, remove it with `maoctl federation remove-member --name {name}`."
    )


@federation.command("remove-member")
@name_option("instance", help="The etcd member (instance) to remove.")
@yes_option
@json_option
@pass_ctl
def remove_member(ctl: Ctl, name: str, yes: bool) -> None:
    """Remove an instance's member from the etcd cluster (it can no longer reach the federation)."""
    confirm(f"Remove {name} from the federation's etcd cluster?", yes)
    result = ctl.api.delete(f"/federation/etcd-members/{segment(name)}")
    ctl.out.show(result, lambda: ctl.out.line(f"Removed {name} from the etcd cluster."))
