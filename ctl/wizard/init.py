"""``maoctl instance init``: pick pipelines (marketplace, federation, this instance) and set them up.

For each chosen pipeline: ask its private variables (hidden; sent in ``private_env``, never stored in
the federation), initialise it, fix what the orchestrator reports missing (datasets created local-only,
tools registered from the marketplace) and optionally schedule it. Re-running shows what is there
(✓/✗) and only adds.
"""

from __future__ import annotations

import copy
from typing import Any

from ..client import ApiError, segment
from ..context import Ctl
from ..marketplace import Marketplace, MarketplaceError
from ..pipeline_input import private_keys
from . import prompts

INVALID_SCHEDULE = ("invalid_cron", "invalid_timezone")


def run_init(ctl: Ctl) -> None:
    prompts.require_terminal(
        "instance init",
        "use `maoctl pipeline add --file FILE` and `maoctl pipeline run --name N --cron EXPR`",
    )
    out = ctl.out
    local = {p["name"]: p for p in ctl.api.get("/pipeline")}
    federation = set(ctl.api.get("/registry/pipelines"))
    available = Marketplace()
    market: Marketplace | None = available  # None once it turns out to be unreachable
    try:
        offered = {p["name"]: p for p in available.pipelines}
    except MarketplaceError as exc:
        out.line(f"The marketplace is not available: {exc.message}", style="yellow")
        market, offered = None, {}
    names = sorted(set(local) | federation | set(offered))
    if not names:
        out.line("No pipelines anywhere yet: not in the marketplace, the federation or on this instance.")
        out.line("Add one with `maoctl pipeline add`.")
        return

    def description(name: str) -> str:
        source = local.get(name) or offered.get(name) or {}
        return str(source.get("description") or "")

    out.table(
        ["pipeline", "description", "this instance", "federation", "marketplace"],
        [[n, description(n), n in local, n in federation, n in offered] for n in names],
        title="Pipelines",
    )
    addable = [n for n in names if n not in local]
    if not addable:
        out.line("Every pipeline is already on this instance: nothing to add.")
        return
    chosen = prompts.checkbox(
        "Pipelines to set up on this instance (space selects, enter confirms):",
        [(f"{n}: {description(n)}" if description(n) else n, n, None) for n in addable],
    )
    if not chosen:
        out.line("Nothing chosen: nothing changed.")
        return
    done = []
    for name in chosen:
        definition = definition_of(ctl, name, name in federation, offered.get(name))
        if definition is not None and set_up(ctl, definition, market):
            done.append(name)
    out.line("")
    out.line(
        f"Set up {len(done)} of {len(chosen)} pipeline(s): {', '.join(done) or 'none'}.",
        style="bold green" if len(done) == len(chosen) else "bold yellow",
    )
    if done:
        out.line(f"Run one now with: maoctl pipeline run --name {done[0]}")


def definition_of(
    ctl: Ctl, name: str, in_federation: bool, offered: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The steps to initialise: the federation's (a name means one thing federation-wide), else the
    marketplace's."""
    source = offered
    if in_federation:
        try:
            source = ctl.api.get(f"/registry/pipelines/{segment(name)}")
        except ApiError as exc:
            if exc.status != 404 or offered is None:
                fail(ctl, name, exc.message)
                return None
    assert source is not None
    return {
        "name": name,
        "description": source.get("description", ""),
        "steps": copy.deepcopy(source["steps"]),
    }


def fail(ctl: Ctl, name: str, message: str) -> None:
    ctl.out.line(f"✗ {name}: {message}", style="red")


def set_up(ctl: Ctl, definition: dict[str, Any], market: Marketplace | None) -> bool:
    name = definition["name"]
    ctl.out.line(f"Setting up {name}", style="bold")
    for step in definition["steps"]:
        for key in private_keys(step):
            step.setdefault("private_env", {})[key] = prompts.secret(
                f"{step['name']}.{key} is private (kept on this instance only); its value:"
            )
    for _attempt in range(3):
        status, body = ctl.api.request("POST", "/pipeline/init", json=definition)
        if status < 300:
            ctl.out.line(f"✓ {name} initialised", style="green")
            break
        errors = (body or {}).get("errors") if isinstance(body, dict) else None
        if status == 400 and errors and (errors.get("missing_tools") or errors.get("missing_datasets")):
            if not provide_missing(ctl, errors, market):
                fail(ctl, name, "skipped: it needs the registrations above")
                return False
            continue
        fail(
            ctl,
            name,
            (body or {}).get("message", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}",
        )
        return False
    else:
        fail(ctl, name, "still missing registrations after registering them; giving up")
        return False
    if prompts.confirm(f"Schedule {name} to run regularly?", default=False):
        schedule(ctl, name)
    return True


def provide_missing(ctl: Ctl, errors: dict[str, Any], market: Marketplace | None) -> bool:
    """Register what init reported missing, with the operator's consent; False if anything stays missing."""
    try:
        for tool in errors.get("missing_tools") or []:
            offered = market.tool_registration(tool) if market is not None else None
            if offered is None:
                fail(
                    ctl,
                    tool,
                    "this tool is neither registered nor in the marketplace: register it with `maoctl tool add`",
                )
                return False
            if not prompts.confirm(
                f"Tool {tool} is not registered. Register it from the marketplace (image {offered['image']})?",
                default=True,
            ):
                return False
            ctl.api.post("/registry/tools", offered)
            ctl.out.line(f"✓ tool {tool} registered", style="green")
        for dataset in errors.get("missing_datasets") or []:
            if not prompts.confirm(
                f"Dataset {dataset} is not registered. Create it local-only (a git repository on this instance)?",
                default=True,
            ):
                ctl.out.line(f"Register it yourself with: maoctl dataset add --name {dataset} --git-url URL")
                return False
            repo = ctl.api.post("/bare-repo/init", {"name": dataset})
            ctl.api.post(
                "/registry/datasets", {"name": dataset, "body": {"master": repo["path"], "nodes": []}}
            )
            ctl.out.line(f"✓ dataset {dataset} created at {repo['path']}", style="green")
    except (ApiError, MarketplaceError) as exc:
        fail(ctl, "registration", exc.message)
        return False
    return True


def schedule(ctl: Ctl, name: str) -> None:
    """Ask for a cron expression until the orchestrator accepts it (it is the one that validates)."""
    while True:
        cron = prompts.text(
            "Cron expression (minute hour day-of-month month day-of-week):", default="0 * * * *"
        )
        timezone = prompts.text("Timezone:", default="UTC")
        status, body = ctl.api.request(
            "POST", "/pipeline/run", json={"name": name, "cron": cron, "timezone": timezone}
        )
        body = body if isinstance(body, dict) else {}
        if status < 300:
            ctl.out.line(
                f"✓ {name} scheduled: '{body.get('cron')}' ({body.get('timezone')}), job {body.get('job_id')}",
                style="green",
            )
            return
        if status == 400 and body.get("error") in INVALID_SCHEDULE:
            ctl.out.line(f"{body.get('message')}; try again", style="yellow")
            continue
        fail(ctl, name, f"not scheduled: {body.get('message', f'HTTP {status}')}")
        return
