"""This host's own IP addresses, for the installer's "which IP do other instances reach?" question.

Read from the host itself (``ip -j addr``, falling back to the host name's addresses): the prototype
asked a web service for the public IP, which leaks the install and is wrong behind NAT anyway.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass

# Bridges and veths of container engines are not reachable from other machines.
_VIRTUAL_PREFIXES = ("docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "podman")


@dataclass(frozen=True)
class Address:
    ip: str
    interface: str

    @property
    def label(self) -> str:
        return f"{self.ip} ({self.interface})"


def host_addresses() -> list[Address]:
    """Non-loopback addresses of this host, IPv4 first, container bridges left out."""
    found = _from_ip_command() or _from_hostname()
    seen: set[str] = set()
    result = []
    for address in sorted(found, key=lambda a: (ipaddress.ip_address(a.ip).version, a.interface, a.ip)):
        if address.ip not in seen:
            seen.add(address.ip)
            result.append(address)
    return result


def _usable(ip: str) -> bool:
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (parsed.is_loopback or parsed.is_link_local or parsed.is_multicast or parsed.is_unspecified)


def _from_ip_command() -> list[Address]:
    # /usr/sbin is not on every user's PATH.
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if not ip:
        return []
    try:
        done = subprocess.run(
            [ip, "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=True
        )
        interfaces = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    addresses = []
    for interface in interfaces if isinstance(interfaces, list) else []:
        name = str(interface.get("ifname", "?"))
        if name.startswith(_VIRTUAL_PREFIXES) or "UP" not in interface.get("flags", []):
            continue
        for info in interface.get("addr_info", []):
            local = str(info.get("local", ""))
            if info.get("scope") == "global" and _usable(local):
                addresses.append(Address(local, name))
    return addresses


def _from_hostname() -> list[Address]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return []
    return [Address(str(info[4][0]), "host name") for info in infos if _usable(str(info[4][0]))]


def ip_problem(value: str, allow_loopback: bool = True) -> str | None:
    try:
        parsed = ipaddress.ip_address(value.strip())
    except ValueError:
        return f"{value!r} is not an IP address (e.g. 10.0.0.5)"
    if parsed.is_unspecified or parsed.is_multicast:
        return f"{value} cannot be reached by anyone: give this host's address"
    if parsed.is_loopback and not allow_loopback:
        return f"{value} is only reachable from this machine: other instances of the federation must reach it"
    return None
