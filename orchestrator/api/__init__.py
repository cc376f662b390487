"""HTTP only: parse and validate, call a service, answer JSON. One module per resource."""

from __future__ import annotations

from aiohttp import web

from . import audits, console, federation, gateway, health, locks, metrics, pipelines, registry, runs


def add_routes(app: web.Application) -> None:
    for module in (health, registry, pipelines, runs, federation, locks, gateway, audits, metrics, console):
        app.router.add_routes(module.routes)
    app[console.DOCUMENT] = {}
