"""Builds the orchestrator's aiohttp application: middlewares, routes, and the node's lifecycle."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .access import auth_middleware, guard_middleware, json_writes_middleware
from .api import add_routes
from .api.common import NODE
from .api.facades import install
from .api.staging import STAGING
from .config import Settings
from .errors import MaoError
from .executors.fetch import FetchExchange
from .node import Node

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON ``{"error", "message"}``; tracebacks only reach the log."""
    try:
        return await handler(request)
    except MaoError as exc:
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return web.json_response(exc.to_json(), status=exc.status, headers=exc.headers or None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            415: "unsupported_media_type",
        }
        message = exc.text if exc.status != 404 else f"no such endpoint: {request.method} {request.path}"
        return _error(exc.status, codes.get(exc.status, "http_error"), message or exc.reason)
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("internal error %s on %s %s", ref, request.method, request.path)
        return _error(500, "internal", f"internal error (reference {ref} in the orchestrator log)")


def create_app(settings: Settings, node: Node | None = None) -> web.Application:
    app = web.Application(
        middlewares=[
            error_middleware,
            guard_middleware(settings),
            auth_middleware(settings.api_token, settings.api_legacy_open, settings.metrics_token),
            json_writes_middleware,
        ],
        client_max_size=4 * 1024**2,
    )
    app[NODE] = node or Node.build(settings)
    install(app, app[NODE])  # each API area sees only its part of the node
    add_routes(app)
    # The fetch data mode's tickets and tarballs: on disk only, so the backends' objects over the same
    # folder (executors/fetch.py) and a restarted process agree with these routes.
    app[STAGING] = FetchExchange(settings.data_dir / "staging", max_output_bytes=settings.step_max_output)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[NODE].start()
        log.info(
            "instance %s started; serving on %s (etcd %s, executor %s)",
            settings.instance_name,
            settings.api_url,
            ",".join(f"{h}:{p}" for h, p in settings.etcd_endpoints),
            settings.executor_url,
        )
        yield
        await app[NODE].close()

    app.cleanup_ctx.append(lifecycle)
    return app
