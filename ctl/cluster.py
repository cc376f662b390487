"""etcd peer URLs and ``ETCD_INITIAL_CLUSTER`` values, checked before they reach a compose file.

A mistake here only shows when etcd refuses to start on another machine, so the installer and
``federation add-member`` check the form up front and say exactly which part is wrong.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from executor.wire.names import name_problem

PEER_PORT = 2380
CLIENT_PORT = 2379


def url_host(ip: str) -> str:
    """``ip`` as it goes into a URL (IPv6 in brackets)."""
    try:
        return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    except ValueError:
        return ip


def peer_url(ip: str, port: int = PEER_PORT, tls: bool = True) -> str:
    """etcd's peer URL on ``ip``: https, since members talk over TLS unless plain HTTP was chosen."""
    return f"{'https' if tls else 'http'}://{url_host(ip)}:{port}"


def peer_url_problem(url: str) -> str | None:
    """Why ``url`` is not an etcd peer URL like https://10.0.0.5:2380, or None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL such as https://10.0.0.5:{PEER_PORT}"
    if port is None:
        return f"{url!r} has no port (etcd peers listen on {PEER_PORT})"
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return f"{url!r} must be just scheme://host:port"
    return None


def parse_initial_cluster(value: str) -> list[tuple[str, str]]:
    """``name=http://host:port,...`` as ``[(name, url)]``; ValueError naming the bad entry otherwise."""
    members: list[tuple[str, str]] = []
    text = value.strip().removeprefix("ETCD_INITIAL_CLUSTER=").strip().strip("'\"")
    if not text:
        raise ValueError(
            "the value is empty: it looks like name1=http://10.0.0.1:2380,name2=http://10.0.0.2:2380"
        )
    for entry in (part.strip() for part in text.split(",")):
        name, sep, url = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r} is not name=http://host:port")
        if problem := name_problem(name.strip(), "member name"):
            raise ValueError(problem)
        if problem := peer_url_problem(url):
            raise ValueError(problem)
        members.append((name.strip(), url.strip()))
    names = [name for name, _ in members]
    if len(set(names)) != len(names):
        raise ValueError("a member name appears twice")
    return members


def initial_cluster_problem(value: str, name: str, own_peer_url: str) -> str | None:
    """Why ``value`` cannot be this instance's ETCD_INITIAL_CLUSTER (it must list the instance itself)."""
    try:
        members = parse_initial_cluster(value)
    except ValueError as exc:
        return str(exc)
    if (name, own_peer_url) not in members:
        listed = dict(members).get(name)
        if listed:
            return f"it lists {name} with {listed}, but this instance's peer URL is {own_peer_url}"
        return (
            f"it does not list this instance ({name}={own_peer_url}): the operator must run "
            f"`maoctl federation add-member --name {name} --peer-url {own_peer_url}` first"
        )
    if len(members) < 2:
        return "it lists only this instance: joining needs the existing members too"
    return None


def format_initial_cluster(members: list[tuple[str, str]]) -> str:
    return ",".join(f"{name}={url}" for name, url in members)
