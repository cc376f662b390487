"""``GET /metrics``: Prometheus text (the admin token, or ``MAO_METRICS_TOKEN`` for a scraper).

The gauges of the present are refreshed here, right before rendering, each bounded in time so a
scrape answers promptly while etcd is away (``mao_etcd_up`` 0, ``mao_members`` left as last seen).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from ..errors import MaoError
from ..metrics import CONTENT_TYPE
from ..store.retention import count_waiting_runs
from .facades import METRICS, facade
from .openapi import doc

routes = web.RouteTableDef()

PROBE_TIMEOUT = 2.0
ALARMS = ("NOSPACE", "CORRUPT")


@routes.get("/metrics")
@doc(
    "Prometheus metrics of this instance (admin token or MAO_METRICS_TOKEN)",
    content_type="text/plain",
    errors=(),
    tags=("operations",),
)
async def metrics(request: web.Request) -> web.Response:
    the_node = facade(request, METRICS)
    m = the_node.metrics
    try:
        await asyncio.wait_for(the_node.etcd.check(), PROBE_TIMEOUT)
        m.etcd_up.set(1)
        m.members.set(len(await asyncio.wait_for(the_node.membership.live(), PROBE_TIMEOUT)))
    except (MaoError, TimeoutError):
        m.etcd_up.set(0)
    with contextlib.suppress(MaoError, TimeoutError):  # left as last seen when etcd does not say
        space = await asyncio.wait_for(the_node.space.read(), PROBE_TIMEOUT)
        m.etcd_db.set(space.db_bytes)
        m.etcd_db_in_use.set(space.in_use_bytes)
        for alarm in ALARMS:
            m.etcd_alarm.labels(alarm).set(1 if alarm in space.alarms else 0)
    m.etcd_quota.set(the_node.space.quota)
    with contextlib.suppress(MaoError, TimeoutError):
        m.queue_depth.set(await asyncio.wait_for(count_waiting_runs(the_node.store), PROBE_TIMEOUT))
    with contextlib.suppress(MaoError, TimeoutError):
        states = await asyncio.wait_for(the_node.runner.strategies.states.all(), PROBE_TIMEOUT)
        m.strategies((p, s, state.chain, state.active) for (p, s), state in states.items())
    running = the_node.runner.execution.running()
    for name, health in (await the_node.backends.health()).items():
        m.backend_up.labels(name).set(1 if health.ok else 0)
        m.backend_running.labels(name).set(running.get(name, 0))
    # CONTENT_TYPE carries its own charset; aiohttp wants them apart.
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE})
