"""The federation: ``/federation/members``, ``/federation/etcd-members``, ``/federation/schedules``."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..errors import EtcdUnavailable
from ..scheduling.ticks import with_next_ticks
from .common import node, ok, parse, path_name, read_json
from .openapi import doc
from .schedule_schemas import FederationSchedule, FederationSchedulesQuery
from .schemas import JsonObject, Members, NewEtcdMember

routes = web.RouteTableDef()

MEMBER_FIELDS = ("name", "api_url", "version", "labels", "started_at")


@routes.get("/federation/members")
@doc("Live instances and etcd's members", answer=Members, errors=(503,), tags=("federation",))
async def list_members(request: web.Request) -> web.Response:
    """Live instances (their lease-bound member keys) and etcd's own members with their health."""
    the_node = node(request)
    try:
        instances, etcd_members = await asyncio.gather(the_node.membership.live(), the_node.cluster.members())
    except EtcdUnavailable as exc:
        # No quorum, no member list: still say which of our configured endpoints answer at all.
        scheme = the_node.etcd.scheme
        endpoints = [f"{scheme}://{host}:{port}" for host, port in the_node.settings.etcd_endpoints]
        answers = await asyncio.gather(*(the_node.etcd.member_answers(url) for url in endpoints))
        raise EtcdUnavailable(
            exc.message,
            endpoints=[
                {"client_url": url, "healthy": ok} for url, ok in zip(endpoints, answers, strict=True)
            ],
        ) from exc
    return ok(
        {
            "instances": [{k: i.get(k) for k in MEMBER_FIELDS} for i in instances],
            "etcd": [
                {k: m[k] for k in ("id", "name", "peer_urls", "client_urls", "healthy")} for m in etcd_members
            ],
        }
    )


@routes.post("/federation/etcd-members")
@doc(
    "Add an etcd member (quorum-checked); answers the ETCD_INITIAL_CLUSTER the newcomer starts with",
    body=NewEtcdMember,
    answer=JsonObject,
    errors=(400, 409, 503),
    tags=("federation",),
)
async def add_etcd_member(request: web.Request) -> web.Response:
    wanted = parse(NewEtcdMember, await read_json(request))
    return ok(await node(request).cluster.add(wanted.name, wanted.peer_url))


@routes.delete("/federation/etcd-members/{name}")
@doc(
    "Remove an etcd member (quorum-checked)",
    answer=JsonObject,
    errors=(400, 404, 409, 503),
    tags=("federation",),
)
async def remove_etcd_member(request: web.Request) -> web.Response:
    name = path_name(request, what="member name")
    return ok(await node(request).cluster.remove(name))


@routes.get("/federation/schedules")
@doc(
    "Federation-wide schedules with every tick's outcome",
    query=FederationSchedulesQuery,
    answer=list[FederationSchedule],
    errors=(400, 503),
    tags=("federation",),
)
async def list_schedules(request: web.Request) -> web.Response:
    """Federation-wide schedules with their recent ticks (newest first): who fired, or why skipped;
    with ``?next=N`` each cron schedule's next N ticks."""
    count = parse(FederationSchedulesQuery, dict(request.query)).next
    return ok(with_next_ticks(await node(request).federation_scheduler.schedules(), count))
