"""HTTP only: parse and validate, call a service, answer JSON. One module per resource."""

from __future__ import annotations

from aiohttp import web

from . import (
    audits,
    backends,
    backfills,
    browser,
    federation,
    gateway,
    health,
    history,
    lineage,
    locks,
    logs,
    metrics,
    pipelines,
    registry,
    runs,
    staging,
    versions,
)


def add_routes(app: web.Application) -> None:
    modules = (
        health,
        backends,
        registry,
        history,
        lineage,
        pipelines,
        versions,
        backfills,
        runs,
        logs,
        federation,
        locks,
        gateway,
        audits,
        metrics,
        staging,
        browser,
    )
    for module in modules:
        app.router.add_routes(module.routes)
    app[browser.DOCUMENT] = {}
