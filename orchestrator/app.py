"""Builds the orchestrator's aiohttp application: middlewares, routes, and the node's lifecycle."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .api import add_routes
from .api.common import NODE
from .api.console import is_public
from .api.gateway import PRINCIPAL
from .config import Settings
from .errors import Forbidden, MaoError, Unauthorized
from .gateway.tokens import ADMIN, GATEWAY_ROUTES, looks_like_gateway_key
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
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        message = exc.text if exc.status != 404 else f"no such endpoint: {request.method} {request.path}"
        return _error(exc.status, codes.get(exc.status, "http_error"), message or exc.reason)
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("internal error %s on %s %s", ref, request.method, request.path)
        return _error(500, "internal", f"internal error (reference {ref} in the orchestrator log)")


def auth_middleware(
    token: str | None, metrics_token: str | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Who may call what: the admin token (``MAO_API_TOKEN``) everything; a gateway key only the
    gateway's routes (403 elsewhere, 401 once revoked); the metrics token (``MAO_METRICS_TOKEN``) only
    ``GET /metrics``; nothing or anything else 401. Without an admin token the API only listens on
    loopback (config refuses anything else) and is open, but a gateway key sent anyway is still
    checked and scoped, and names the writer of raw entries. The console's and the API reference's
    static files (``console.is_public``) load without a token: they hold no data and ask for it."""
    expected = f"Bearer {token}".encode() if token else None
    metrics_expected = f"Bearer {metrics_token}".encode() if metrics_token else None

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        credential = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else ""
        if expected is not None and hmac.compare_digest(given.encode(), expected):
            request[PRINCIPAL] = ADMIN
        elif (
            metrics_expected is not None
            and request.path == "/metrics"
            and hmac.compare_digest(given.encode(), metrics_expected)
        ):
            request[PRINCIPAL] = ADMIN
        elif looks_like_gateway_key(credential):
            found = await request.app[NODE].gateway_keys.identify(credential)
            if found is None:
                raise Unauthorized(
                    "unknown or revoked gateway key: ask the instance's operator for a new one"
                )
            if (request.method, request.path) not in GATEWAY_ROUTES:
                raise Forbidden(
                    f"gateway key {found.name!r} may only call POST /write, /read and /inspect, "
                    f"not {request.method} {request.path}"
                )
            request[PRINCIPAL] = found
        elif expected is not None:
            raise Unauthorized("missing or wrong API token: send 'Authorization: Bearer <MAO_API_TOKEN>'")
        else:
            request[PRINCIPAL] = ADMIN
        return await handler(request)

    return check_token


def create_app(settings: Settings, node: Node | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(settings.api_token, settings.metrics_token)],
        client_max_size=4 * 1024**2,
    )
    app[NODE] = node or Node.build(settings)
    add_routes(app)

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
