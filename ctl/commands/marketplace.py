"""``maoctl marketplace``: what the marketplace (MAO_MARKETPLACE) offers."""

from __future__ import annotations

import click

from ..context import Ctl, json_option, pass_ctl
from ..marketplace import Marketplace


@click.group()
def marketplace() -> None:
    """The marketplace: federations, tools and pipelines (MAO_MARKETPLACE: a folder or http(s) URL)."""


@marketplace.command("show")
@json_option
@pass_ctl
def show(ctl: Ctl) -> None:
    """List the federations, tools and pipelines the marketplace offers."""
    market = Marketplace()
    data = {
        "location": market.where,
        "federations": market.federations,
        "tools": market.tools,
        "pipelines": market.pipelines,
    }

    def human() -> None:
        ctl.out.line(f"marketplace: {market.where}")
        ctl.out.table(
            ["federation", "description", "contacts"],
            [[f["name"], f.get("description"), f.get("contacts")] for f in market.federations],
            title="federations",
        )
        ctl.out.table(
            ["tool", "image", "author", "description"],
            [[t["name"], t["image"], t.get("author"), t.get("description")] for t in market.tools],
            title="tools",
        )
        ctl.out.table(
            ["pipeline", "description", "steps"],
            [[p["name"], p.get("description"), [s["name"] for s in p["steps"]]] for p in market.pipelines],
            title="pipelines",
        )

    ctl.out.show(data, human)
