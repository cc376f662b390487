"""The etcd cluster's own membership: listing members with their health, adding and removing one.

etcd keeps the federation's state only while a majority (quorum) of its members answers. A change of
membership changes the majority, so both changes are refused (409, with the numbers) when they would
leave the cluster without quorum:
- add: the newcomer is not running yet, so the members that answer now must already be a majority of
  the new size n+1, i.e. at least (n+1)//2 + 1. One exception, etcd's own: a lone member that answers
  may add a second one (etcd allows exactly this, or no federation could ever grow past one
  instance). Until the newcomer's member starts, the two-member cluster has no quorum and every write
  pauses; the answer says so (``writes_pause_until_started``);
- remove: the members that answer, other than the one removed, must be a majority of n-1; the last
  member is never removed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from executor.wire.names import name_problem

from ..errors import BadRequest, Conflict, NotFound
from ..urls import split_url
from .etcd import Etcd

log = logging.getLogger(__name__)

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?$|^\[[0-9A-Fa-f:.]+\]$")


def quorum(size: int) -> int:
    return size // 2 + 1


def check_peer_url(value: object) -> str:
    """``http(s)://host:port`` and nothing else (no path, user or query): etcd's peer URL form."""
    problem = f"peer_url must look like http://host:2380 (got {str(value)[:100]!r})"
    if not isinstance(value, str):
        raise BadRequest(problem, code="invalid_peer_url")
    parts = split_url(value)
    if parts is None:
        raise BadRequest(problem, code="invalid_peer_url")
    port = parts.port
    host = parts.netloc.rpartition(":")[0]
    if (
        parts.scheme not in ("http", "https")
        or not port
        or not _HOST_RE.fullmatch(host)
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise BadRequest(problem, code="invalid_peer_url")
    return f"{parts.scheme}://{parts.netloc}"


class EtcdCluster:
    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd

    async def members(self) -> list[dict[str, Any]]:
        """etcd's members, each with ``healthy``: it answers a status call within about a second."""
        members = await self.etcd.members()

        async def healthy(member: dict[str, Any]) -> bool:
            answers = await asyncio.gather(*(self.etcd.member_answers(url) for url in member["client_urls"]))
            return any(answers)

        health = await asyncio.gather(*(healthy(m) for m in members))
        return [
            {**m, "id": _hex(m["id"]), "healthy": ok}
            for m, ok in sorted(zip(members, health, strict=True), key=lambda pair: pair[0]["name"])
        ]

    async def add(self, name: object, peer_url: object) -> dict[str, Any]:
        if problem := name_problem(name, "member name"):
            raise BadRequest(problem, code="invalid_name")
        assert isinstance(name, str)
        peer_url = check_peer_url(peer_url)
        members = await self.members()
        for member in members:
            if member["name"] == name:
                raise Conflict(f"etcd already has a member named {name!r}", code="member_exists")
            if peer_url in member["peer_urls"]:
                raise Conflict(
                    f"etcd member {member['name'] or member['id']!r} already uses the peer URL {peer_url}",
                    code="member_exists",
                )
        size, healthy = len(members), sum(m["healthy"] for m in members)
        needed = quorum(size + 1)
        growing_from_one = size == 1 and healthy == 1
        if healthy < needed and not growing_from_one:
            raise Conflict(
                f"refusing to add {name!r}: the cluster would have {size + 1} members and need {needed} "
                f"of them for quorum, but only {healthy} of the {size} current members answer (the "
                "newcomer does not run yet); bring the missing members back first",
                code="quorum_at_risk",
                members=size,
                healthy=healthy,
                needed=needed,
            )
        added = await self.etcd.add_member(peer_url)
        log.info(
            "etcd member %s (%s) added with id %s; it must now start with state 'existing'",
            name,
            peer_url,
            _hex(added["id"]),
        )
        initial = [f"{m['name'] or m['id']}={url}" for m in members for url in m["peer_urls"]] + [
            f"{name}={peer_url}"
        ]
        answer: dict[str, Any] = {
            "member": {"id": _hex(added["id"]), "name": name, "peer_urls": added["peer_urls"]},
            "ETCD_INITIAL_CLUSTER": ",".join(initial),
            "ETCD_INITIAL_CLUSTER_STATE": "existing",
            "writes_pause_until_started": healthy < needed,
        }
        if healthy < needed:
            answer["warning"] = (
                f"the federation's etcd now has {size + 1} members and needs {needed} for quorum: every "
                f"write (registrations, locks, runs' merges) pauses until {name}'s etcd member starts; "
                f"if it never will, remove it with `maoctl federation remove-member --name {added['id']:x}`"
            )
            log.warning("%s", answer["warning"])
        return answer

    async def remove(self, name: str) -> dict[str, Any]:
        members = await self.members()
        # By name, or by id for a member that was added but never started (it has no name yet).
        target = next((m for m in members if name in (m["name"], m["id"])), None)
        if target is None:
            raise NotFound(f"etcd has no member named {name!r}", code="no_such_member")
        size = len(members)
        if size == 1:
            raise Conflict(
                f"refusing to remove {name!r}: it is the cluster's last member and the federation's "
                "state would go with it",
                code="last_member",
            )
        remaining = sum(m["healthy"] for m in members if m is not target)
        needed = quorum(size - 1)
        if remaining < needed:
            raise Conflict(
                f"refusing to remove {name!r}: the remaining {size - 1} members need {needed} for quorum, "
                f"but only {remaining} of them answer; bring the missing members back first",
                code="quorum_at_risk",
                members=size,
                healthy=remaining,
                needed=needed,
            )
        await self.etcd.remove_member(int(target["id"], 16))
        log.info("etcd member %s (%s) removed from the cluster", name, target["id"])
        return {"member": {k: target[k] for k in ("id", "name", "peer_urls")}, "removed": True}


def _hex(member_id: int) -> str:
    # etcd ids are 64-bit; etcdctl shows them in hex, and JSON clients cannot hold them as numbers.
    return f"{member_id:x}"
