"""The installer's answers: their defaults, their checks, and the answers file (JSON or YAML).

Interactive questions, ``--answers FILE`` and flags all end in the same ``InstallAnswers`` and pass the
same checks, so automation cannot write an install the wizard would have refused.
"""

from __future__ import annotations

import getpass
import ipaddress
import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from executor.wire.names import name_problem

from ..cluster import (
    CLIENT_PORT,
    PEER_PORT,
    format_initial_cluster,
    initial_cluster_problem,
    parse_initial_cluster,
    peer_url,
)
from ..install_files import default_run_as
from ..instance_config import IMAGE_VARIABLES, InstanceConfig, default_images
from ..join_bundle import BundleError, load_bundle
from ..netinfo import host_addresses, ip_problem
from ..pipeline_input import load_structured_file

DEFAULT_DIRECTORY = "~/mao-instance"


@dataclass
class InstallAnswers:
    join: bool = False
    federation: str | None = None
    initial_cluster: str | None = None
    # The file `maoctl federation add-member` wrote for this instance: certificates + ETCD_INITIAL_CLUSTER.
    join_bundle: str | None = None
    directory: str | None = None
    name: str | None = None
    ip: str | None = None
    git_email: str | None = None
    ssh_dir: str | None = None
    api_port: int = 8080
    postgres_port: int = 5433
    executor_port: int = 8081
    etcd_client_port: int = CLIENT_PORT
    etcd_peer_port: int = PEER_PORT
    images: dict[str, str] = field(default_factory=dict)  # service -> image; the rest keep the defaults
    labels: dict[str, str] = field(default_factory=dict)
    overwrite: bool = False
    # A federation tried on one machine: loopback addresses (127.0.0.2, 127.0.0.3) for its instances,
    # joining included. Without it a joining instance refuses loopback (others could never reach it).
    single_host: bool = False


KEYS = {f.name for f in fields(InstallAnswers)}


def from_file(path: Path) -> dict[str, Any]:
    data = load_structured_file(path)
    if not isinstance(data, dict):
        raise click.BadParameter(f'{path} must hold an object of answers such as {{"name": "node1"}}')
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise click.BadParameter(
            f"{path}: unknown answer(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}"
        )
    return data


def default_name() -> str:
    host = socket.gethostname().split(".")[0]
    return host if name_problem(host) is None else "mao-node"


def default_email(name: str) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "mao"
    return f"{user}@{name}"


def default_ip(joining: bool, single_host: bool = False) -> str:
    if single_host:
        return "127.0.0.1"
    addresses = host_addresses()
    return addresses[0].ip if addresses else ("" if joining else "127.0.0.1")


def single_host_problem(value: str) -> str | None:
    """A single-host federation's instances use loopback addresses only."""
    try:
        loopback = ipaddress.ip_address(value.strip()).is_loopback
    except ValueError:
        return None  # ip_problem says so
    if not loopback:
        return (
            f"{value} is not a loopback address: single_host keeps the federation on this machine "
            "(give 127.0.0.2, 127.0.0.3, ...; leave single_host out for instances on several machines)"
        )
    return None


def check_directory(value: str) -> str | None:
    if not value.strip():
        return "give a folder, e.g. ~/mao-instance"
    path = Path(value.strip()).expanduser()
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    return None


def check_email(value: str) -> str | None:
    local, at, domain = value.strip().partition("@")
    if not at or not local or not domain or any(c.isspace() or c in "<>\"'" for c in value.strip()):
        return f"{value!r} is not an e-mail address such as me@example.org"
    return None


def check_ssh_dir(value: str) -> str | None:
    if value.strip() and not Path(value.strip()).expanduser().is_dir():
        return f"{value} is not a folder (leave it empty if git needs no SSH key)"
    return None


def check_port(value: Any, what: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return f"{what} must be a port number between 1 and 65535, not {value!r}"
    return None


PORT_KEYS = ("api_port", "postgres_port", "executor_port", "etcd_client_port", "etcd_peer_port")
# An image reference: it goes into .env, so no spaces, quotes or line breaks.
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


def port_problems(answers: InstallAnswers) -> list[str]:
    found = [f"{key}: {problem}" for key in PORT_KEYS if (problem := check_port(getattr(answers, key), key))]
    if not found:
        ports = [getattr(answers, key) for key in PORT_KEYS]
        if len(set(ports)) != len(ports):
            found.append(f"ports: {', '.join(PORT_KEYS)} must all differ (one host port each)")
    return found


def image_problems(images: Any) -> list[str]:
    if not isinstance(images, dict):
        return ['images: must be an object such as {"etcd": "quay.io/coreos/etcd:v3.5.17"}']
    found = [
        f"images: {key!r} is not a service ({', '.join(IMAGE_VARIABLES)})"
        for key in images
        if key not in IMAGE_VARIABLES
    ]
    found += [
        f"images: {key}: {value!r} is not an image name such as mao-etcd:bookworm"
        for key, value in images.items()
        if not isinstance(value, str) or not IMAGE_RE.fullmatch(value)
    ]
    return found


TEXT_KEYS = (
    "federation",
    "initial_cluster",
    "join_bundle",
    "directory",
    "name",
    "ip",
    "git_email",
    "ssh_dir",
)


def type_problems(answers: InstallAnswers) -> list[str]:
    """An answers file can hold any JSON type: say which answers have the wrong one."""
    found = [
        f"{key}: must be a string" for key in TEXT_KEYS if not isinstance(getattr(answers, key), str | None)
    ]
    found += [
        f"{key}: must be true or false"
        for key in ("join", "overwrite", "single_host")
        if not isinstance(getattr(answers, key), bool)
    ]
    return found


def problems(answers: InstallAnswers) -> list[str]:
    """Every reason these answers cannot make an instance (empty when they can)."""
    found = type_problems(answers)
    if found:
        return found
    for what, check in (
        ("directory", check_directory(answers.directory or "")),
        ("name", name_problem(answers.name or "", "instance name")),
        (
            "ip",
            ip_problem(answers.ip or "", allow_loopback=answers.single_host or not answers.join)
            or (single_host_problem(answers.ip or "") if answers.single_host else None),
        ),
        ("git_email", check_email(answers.git_email or "")),
        ("ssh_dir", check_ssh_dir(answers.ssh_dir or "")),
    ):
        if check:
            found.append(f"{what}: {check}")
    found += port_problems(answers) + image_problems(answers.images)
    if not isinstance(answers.labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "," not in k + v and "=" not in k
        for k, v in answers.labels.items()
    ):
        found.append('labels: must be an object of strings, e.g. {"site": "lab"}')
    if answers.join:
        found += join_problems(answers, found)
    else:
        found += [
            f"{key}: only for joining a federation (join: true)" for key in JOIN_KEYS if getattr(answers, key)
        ]
    return found


JOIN_KEYS = ("initial_cluster", "join_bundle")


def join_problems(answers: InstallAnswers, found: list[str]) -> list[str]:
    """A joining instance needs the bundle its federation's operator sent, made for its name and IP."""
    if not answers.join_bundle:
        return [
            "join_bundle: joining needs the join bundle the federation's operator sends (written by "
            "`maoctl federation add-member`: the certificates and ETCD_INITIAL_CLUSTER)"
        ]
    try:
        bundle = load_bundle(Path(answers.join_bundle))
    except BundleError as exc:
        return [f"join_bundle: {exc}"]
    if answers.initial_cluster and _members(answers.initial_cluster) != _members(bundle.initial_cluster):
        return ["initial_cluster: differs from the join bundle's; leave it out (the bundle holds it)"]
    if answers.name and answers.ip and not found:
        if problem := initial_cluster_problem(bundle.initial_cluster, answers.name, own_peer_url(answers)):
            return [f"join_bundle: made for {bundle.name} at {bundle.peer_url}: {problem}"]
    return []


def _members(value: str) -> list[tuple[str, str]] | None:
    try:
        return parse_initial_cluster(value)
    except ValueError:
        return None


def bundle_defaults(answers: InstallAnswers) -> None:
    """Name, IP and ETCD_INITIAL_CLUSTER of a joining instance default to its join bundle's."""
    if not (answers.join and isinstance(answers.join_bundle, str) and answers.join_bundle):
        return
    try:
        bundle = load_bundle(Path(answers.join_bundle))
    except BundleError:
        return  # reported by problems()
    answers.name = answers.name or bundle.name
    answers.ip = answers.ip or urlsplit(bundle.peer_url).hostname
    answers.initial_cluster = answers.initial_cluster or bundle.initial_cluster


def own_peer_url(answers: InstallAnswers) -> str:
    return peer_url(answers.ip or "", answers.etcd_peer_port)


def fill_defaults(answers: InstallAnswers) -> InstallAnswers:
    bundle_defaults(answers)
    answers.directory = answers.directory or DEFAULT_DIRECTORY
    answers.name = answers.name or default_name()
    answers.ip = answers.ip or default_ip(answers.join, answers.single_host)
    answers.git_email = answers.git_email or default_email(answers.name)
    return answers


def to_config(answers: InstallAnswers) -> InstanceConfig:
    assert answers.directory and answers.name and answers.ip and answers.git_email
    ssh = (answers.ssh_dir or "").strip()
    return InstanceConfig(
        name=answers.name.strip(),
        ip=answers.ip.strip(),
        directory=Path(answers.directory.strip()).expanduser().resolve(),
        git_email=answers.git_email.strip(),
        ssh_dir=Path(ssh).expanduser().resolve() if ssh else None,
        initial_cluster=(
            format_initial_cluster(parse_initial_cluster(answers.initial_cluster))
            if answers.join and answers.initial_cluster
            else None
        ),
        federation=answers.federation,
        api_port=answers.api_port,
        postgres_port=answers.postgres_port,
        executor_port=answers.executor_port,
        etcd_client_port=answers.etcd_client_port,
        etcd_peer_port=answers.etcd_peer_port,
        labels=dict(answers.labels),
        images={**default_images(), **answers.images},
        run_as=default_run_as(),
        single_host=answers.single_host,
    )
