"""``maoctl instance install``: ask, check, then write a ready-to-start instance folder.

The questions follow the prototype's installer: join a federation or not, install directory, instance
name, the IP other instances reach this one on, git e-mail, SSH key folder. Joining explains what to
send the federation's operator and takes back the join bundle they return (its certificates and
``ETCD_INITIAL_CLUSTER``). A new federation gets its CA in ``<dir>/ca`` and certificates in ``<dir>/pki``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from executor.wire.names import name_problem

from .. import pki
from ..cluster import initial_cluster_problem
from ..compose import api_socket
from ..context import Ctl
from ..env_files import ENV_FILE, Secrets
from ..install_files import existing_files, hand_over_pki, write_install
from ..instance_config import InstanceConfig
from ..join_bundle import BundleError, load_bundle
from ..marketplace import Marketplace, MarketplaceError
from ..netinfo import host_addresses, ip_problem
from ..stack import start_hint
from . import prompts
from .answers import (
    DEFAULT_DIRECTORY,
    InstallAnswers,
    check_directory,
    check_email,
    check_ssh_dir,
    default_email,
    default_ip,
    default_name,
    fill_defaults,
    own_peer_url,
    problems,
    single_host_problem,
    to_config,
)

OTHER = object()


def run_install(ctl: Ctl, answers: InstallAnswers, given: set[str], interactive: bool) -> None:
    """``given``: the answers that came from flags or the answers file (never asked again)."""
    if interactive:
        prompts.require_terminal("instance install", "give --answers FILE, or flags with --non-interactive")
        # A bad flag is reported before any question, not after all of them.
        trial = fill_defaults(dataclasses.replace(answers))
        if early := [p for p in problems(trial) if p.split(":", 1)[0] in given]:
            raise click.UsageError("the answers cannot make an instance:\n  " + "\n  ".join(early))
        ask_missing(ctl, answers, given)
    else:
        fill_defaults(answers)
    found = problems(answers)
    if found:
        raise click.UsageError("the answers cannot make an instance:\n  " + "\n  ".join(found))
    config = to_config(answers)
    present = existing_files(config.directory)
    if present and not answers.overwrite:
        listed = ", ".join(p.name for p in present)
        if not interactive:
            raise click.ClickException(
                f"{config.directory} already holds {listed}; nothing was written "
                '(pass --yes or "overwrite": true to replace them)'
            )
        if not prompts.confirm(
            f"{config.directory} already holds {listed}. Overwrite them (secrets and data are kept)?"
        ):
            raise click.ClickException("nothing was written")
    if interactive:
        show_summary(ctl, config)
        if not prompts.confirm(f"Write the instance to {config.directory}?", default=True):
            raise click.ClickException("nothing was written")
    # Reusing an earlier install's secrets keeps its PostgreSQL data readable and its token valid.
    keys = Secrets.reuse_or_generate(config.directory)
    written = write_install(config, keys)
    written += hand_over_pki(config, write_certificates(config, answers))
    report(ctl, config, written)


def write_certificates(config: InstanceConfig, answers: InstallAnswers) -> list[Path]:
    """A joining instance's certificates come from its join bundle; a new federation gets its CA
    (kept in <dir>/ca, never mounted) and this instance's certificates issued by it."""
    if config.joining:
        assert answers.join_bundle
        return pki.save_member(load_bundle(Path(answers.join_bundle)).certificates, config.pki_dir)
    return pki.found_federation(config.directory, config.name, config.ip, config.federation)


def ask_missing(ctl: Ctl, answers: InstallAnswers, given: set[str]) -> None:
    out = ctl.out
    out.line(
        "MAO instance installer: every answer can be changed later in the files it writes.", style="bold"
    )
    if "join" not in given:
        answers.join = prompts.confirm("Join an existing federation?", default=False)
    if answers.join and "federation" not in given:
        answers.federation = choose_federation(ctl)
    if "directory" not in given:
        answers.directory = prompts.path(
            "Install directory:", default=DEFAULT_DIRECTORY, check=check_directory
        )
    directory = Path(answers.directory or DEFAULT_DIRECTORY).expanduser()
    present = existing_files(directory)
    if present and not answers.overwrite:
        listed = ", ".join(p.name for p in present)
        if not prompts.confirm(
            f"{directory} already holds {listed}. Overwrite them (secrets and data are kept)?"
        ):
            raise click.ClickException("nothing was written")
        answers.overwrite = True
    if "name" not in given:
        answers.name = prompts.text(
            "Instance name:", default=default_name(), check=lambda v: name_problem(v.strip(), "instance name")
        )
    if "ip" not in given:
        answers.ip = choose_ip(answers.join, answers)
    if "git_email" not in given:
        answers.git_email = prompts.text(
            "Git e-mail for this instance's commits:",
            default=default_email(answers.name or ""),
            check=check_email,
        )
    if "ssh_dir" not in given:
        answers.ssh_dir = (
            prompts.path("SSH key folder for git remotes (empty for none):", check=check_ssh_dir) or None
        )
    if answers.join and "join_bundle" not in given:
        explain_joining(ctl, answers)
        name, own = answers.name or "", own_peer_url(answers)
        answers.join_bundle = prompts.text(
            "Join bundle from the operator (file):", check=lambda v: bundle_problem(v, name, own)
        )
    fill_defaults(answers)


def bundle_problem(value: str, name: str, own_peer_url: str) -> str | None:
    try:
        bundle = load_bundle(Path(value.strip()).expanduser())
    except BundleError as exc:
        return str(exc)
    return initial_cluster_problem(bundle.initial_cluster, name, own_peer_url)


def choose_federation(ctl: Ctl) -> str | None:
    try:
        federations = Marketplace().federations
    except MarketplaceError as exc:
        ctl.out.line(f"(the marketplace is not available: {exc.message})", style="yellow")
        federations = []
    if not federations:
        return None
    choices: list[tuple[str, Any]] = [
        (
            f"{f['name']}: {f.get('description', '')} (contacts: {', '.join(f.get('contacts', [])) or 'none listed'})",
            f,
        )
        for f in federations
    ]
    choices.append(("Another federation (not in the marketplace)", OTHER))
    chosen = prompts.select("Which federation?", choices)
    return None if chosen is OTHER else str(chosen["name"])


def choose_ip(joining: bool, answers: InstallAnswers) -> str:
    port_note = (
        f"other instances must reach its ports {answers.etcd_client_port}, {answers.etcd_peer_port} "
        f"and {answers.api_port}"
    )
    single = answers.single_host
    choices: list[tuple[str, Any]] = [] if single else [(a.label, a.ip) for a in host_addresses()]
    if single:
        choices.append(
            ("127.0.0.1 (a federation on this machine; type 127.0.0.2, ... for the next)", "127.0.0.1")
        )
    elif not joining:
        choices.append(("127.0.0.1 (this machine only: a standalone instance nobody can join)", "127.0.0.1"))
    choices.append(("Type another address", OTHER))
    chosen = prompts.select(
        f"IP address of this instance ({port_note}):", choices, default=default_ip(joining, single)
    )
    if chosen is not OTHER:
        return str(chosen)

    def check(value: str) -> str | None:
        problem = ip_problem(value, allow_loopback=single or not joining)
        return problem or (single_host_problem(value) if single else None)

    return prompts.text("IP address:", check=check)


def federation_contacts(name: str | None) -> list[str]:
    if not name:
        return []
    try:
        found = next((f for f in Marketplace().federations if f["name"] == name), None)
    except MarketplaceError:
        return []
    return list(found.get("contacts", [])) if found else []


def explain_joining(ctl: Ctl, answers: InstallAnswers) -> None:
    out = ctl.out
    own = own_peer_url(answers)
    contacts = federation_contacts(answers.federation)
    who = f"the operator of {answers.federation or 'the federation'}"
    if contacts:
        who += f" ({', '.join(contacts)})"
    out.line("")
    out.line(f"To join, send {who}:", style="bold")
    out.line(f"  instance name: {answers.name}")
    out.line(f"  peer URL:      {own}")
    out.line("Where the federation's CA is, they add this instance to the etcd cluster with")
    out.line(f"  maoctl federation add-member --name {answers.name} --peer-url {own}", style="bold")
    out.line(
        f"and send back the join bundle it writes ({answers.name}-join.json: this instance's certificates "
        "and ETCD_INITIAL_CLUSTER; it holds private keys, so it travels like a password)."
    )
    out.line("")


def show_summary(ctl: Ctl, config: InstanceConfig) -> None:
    ctl.out.fields(
        [
            (
                "federation",
                (config.federation or "(not in the marketplace)")
                if config.joining
                else "none: a new etcd cluster",
            ),
            ("directory", str(config.directory)),
            ("instance name", config.name),
            ("IP address", f"{config.ip} (single host)" if config.single_host else config.ip),
            ("etcd peer URL", config.peer_url),
            ("git e-mail", config.git_email),
            ("SSH key folder", str(config.ssh_dir) if config.ssh_dir else None),
            ("ETCD_INITIAL_CLUSTER", config.initial_cluster if config.joining else None),
            ("certificates", f"{config.pki_dir} (etcd over TLS)"),
            ("federation CA", None if config.joining else f"{config.ca_dir} (new; its key stays there)"),
        ],
        title="The instance",
    )


def report(ctl: Ctl, config: InstanceConfig, written: list[Path]) -> None:
    start = start_hint(config.directory)
    token = f"export MAO_API_TOKEN=\"$(sed -n 's/^MAO_API_TOKEN=//p' {config.directory / ENV_FILE})\""
    data = {
        "directory": str(config.directory),
        "files": [str(p) for p in written],
        "etcd_initial_cluster_state": "existing" if config.joining else "new",
        "peer_url": config.peer_url,
        "pki_dir": str(config.pki_dir),
        "ca_dir": None if config.joining else str(config.ca_dir),
        "api_url": config.api_url,
        "api_socket": api_socket(config),
        "start": start,
        "images": config.images,
    }

    def human() -> None:
        out = ctl.out
        out.line(f"Wrote {config.directory}:", style="bold green")
        for path in written:
            out.line(f"  {path}{'/' if path.is_dir() else ''}")
        out.line("")
        out.line("Build the images once per host (no registry needed): scripts/images.sh in a MAO checkout.")
        out.line(
            "Start it (or: maoctl instance up --dir DIR, which also waits until it is healthy):", style="bold"
        )
        out.line(f"  {start}")
        out.line("Then point maoctl at it (through its socket: no one holding a port gets the token):", style="bold")
        out.line(f"  export MAO_URL=unix://{api_socket(config)}")
        out.line(f"  {token}")
        out.line("  maoctl instance status")
        out.line("  maoctl instance init    # pick pipelines from the marketplace")
        if config.joining:
            out.line(
                "Its etcd joins the federation's cluster when it starts; the other members must reach "
                f"{config.peer_url}."
            )
        else:
            out.line(
                f"The federation's CA is in {config.ca_dir}: keep it private and in place. Admit another "
                "instance from this folder with `maoctl federation add-member` (it issues the newcomer's "
                "certificates into a join bundle)."
            )
        if config.ssh_dir is not None and ssh_owner(config.ssh_dir) != config.run_as:
            # ssh refuses keys others can read, so the folder must belong to the orchestrator's user.
            out.line(
                f"The orchestrator runs as {config.run_as}, not as the owner of {config.ssh_dir}: give it a "
                f"folder holding only the deploy key (chown -R {config.run_as} FOLDER), or git over SSH fails.",
                style="yellow",
            )

    ctl.out.show(data, human)


def ssh_owner(folder: Path) -> str | None:
    try:
        info = folder.stat()
    except OSError:
        return None
    return f"{info.st_uid}:{info.st_gid}"
