"""``maoctl federation``: the instances of the federation and the etcd cluster they share."""

from __future__ import annotations

from typing import Any

import click

from ..client import segment
from ..cluster import peer_url_problem
from ..context import Ctl, confirm, json_option, name_option, pass_ctl, yes_option


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
    help="The new instance's etcd peer URL, e.g. http://10.0.0.5:2380.",
)
@json_option
@pass_ctl
def add_member(ctl: Ctl, name: str, peer_url: str) -> None:
    """Add a joining instance to the etcd cluster; prints the ETCD_INITIAL_CLUSTER to send it."""
    result = ctl.api.post("/federation/etcd-members", {"name": name, "peer_url": peer_url})
    ctl.out.show(result, lambda: _explain_added(ctl, name, peer_url, result))


def _explain_added(ctl: Ctl, name: str, peer_url: str, result: dict[str, Any]) -> None:
    ctl.out.line(f"Added {name} ({peer_url}) to the federation's etcd cluster.")
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
