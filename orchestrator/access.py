"""Who may talk to the API (docs/security.md): the token, the Host and Origin guards, JSON-only writes.

The order matters and is fixed in ``create_app``: ``guard_middleware`` first (a foreign Host or Origin
is refused before any credential is looked at), then ``auth_middleware``, then
``json_writes_middleware``.

- Host: a name not in ``MAO_API_HOSTNAMES`` is a 421 (Misdirected Request). A DNS-rebinding page
  reaches this API under its own domain name; the Host header is the one thing it cannot forge.
  421 rather than 403 because nothing is wrong with the caller's rights: the request names a site this
  server is not, and a client that used the right name would be served.
- Origin: browsers send it with every cross-origin request and every write; only this API's own
  origin (the request's Host, or ``MAO_ADVERTISE_URL``) is accepted, anything else is a 403. Clients
  that are not browsers send no Origin and are not affected.
- Content type: POST/PUT/PATCH need ``application/json`` (415). HTML forms and "simple" cross-origin
  requests cannot send it without a CORS preflight, which this API never grants. A write with no body
  and no content type at all passes this check (``POST /runs/{id}/cancel`` takes none); a page cannot
  use that: browsers send Origin with every POST, so the Origin guard has refused it already.
- Token: everything but ``GET /`` (liveness), the console's static pages (``browser.is_public``:
  they hold no data and ask for the token) and the two staging routes of the fetch data mode
  (``staging.is_staging``: a pod holds the attempt's single-use ticket, never the API token) needs
  ``Authorization: Bearer <token>`` (compared in constant time), or a gateway key on the gateway's
  three routes, or ``MAO_METRICS_TOKEN`` on ``GET /metrics`` only. The Host and Origin guards apply
  to the public pages and the staging routes too. ``MAO_API_LEGACY_OPEN=1`` lets tokenless requests
  in, as the prototype did, on a loopback listener only (config enforces that).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from .api.browser import is_public
from .api.facades import GATEWAY
from .api.gateway import PRINCIPAL
from .api.staging import is_staging
from .config import Settings
from .errors import Forbidden, MaoError, Unauthorized
from .gateway.tokens import ADMIN, GATEWAY_ROUTES, looks_like_gateway_key
from .urls import split_url

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[..., Awaitable[web.StreamResponse]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
LIVENESS = ("GET", "/")
METRICS_METHODS = frozenset({"GET", "HEAD"})
METRICS_PATH = "/metrics"


class MisdirectedHost(MaoError, status=421, code="unknown_host"):
    """A Host name not in MAO_API_HOSTNAMES."""


class UnsupportedMediaType(MaoError, status=415, code="unsupported_media_type"):
    """A write whose body is not JSON."""


def host_name(host_header: str) -> str:
    """The host part of a Host header, lower-cased, without port or IPv6 brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") > 1:  # a bare IPv6 address (not valid in Host, but do not split it)
        return host
    return host.partition(":")[0]


def _origin_of(url: str) -> str | None:
    parts = split_url(url)
    if parts is None or not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def guard_middleware(settings: Settings) -> Middleware:
    allowed_hosts = frozenset(settings.api_hostnames)
    advertised = _origin_of(settings.advertise_url)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        # No browser reaches the local socket (maoctl's), so no page can rebind a name to it.
        if host_name(host) not in allowed_hosts and not on_unix_socket(request):
            raise MisdirectedHost(
                f"this API does not answer to the host name {host_name(host)[:100]!r}: use one of "
                f"{', '.join(sorted(allowed_hosts))}, or add it to MAO_API_HOSTNAMES"
            )
        origin = request.headers.get("Origin")
        if origin is not None:
            own = f"{request.scheme}://{host.strip().lower()}"
            if origin.strip().lower() not in (own, advertised):
                raise Forbidden(
                    f"requests from web pages of other sites (Origin {origin[:100]!r}) are refused",
                    code="foreign_origin",
                )
        return await handler(request)

    return guard


def on_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


@web.middleware
async def json_writes_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes are JSON (415 otherwise); runs after the token check so that a caller without a
    token learns nothing but 401. A write with no body at all and no content type passes (``curl -X
    POST .../runs/ID/cancel``): it carries nothing to mistake for JSON, and a route that needs a body
    answers 400 for the missing one (``read_json``)."""
    if (
        request.method in WRITE_METHODS
        and request.content_type != "application/json"
        and not _bare(request)
        and not is_staging(request)  # a tarball, checked by its ticket
    ):
        raise UnsupportedMediaType(
            f"{request.method} needs 'Content-Type: application/json' (got {request.content_type!r})"
        )
    return await handler(request)


def _bare(request: web.Request) -> bool:
    """No body (no Content-Length above 0, no chunked encoding) and no Content-Type header."""
    return not request.body_exists and "Content-Type" not in request.headers


def auth_middleware(
    token: str | None, legacy_open: bool = False, metrics_token: str | None = None
) -> Middleware:
    """Who may call what: the admin token everything; the metrics token (``MAO_METRICS_TOKEN``) only
    ``GET /metrics``; a gateway key only the gateway's routes (403 elsewhere, 401 once revoked);
    nothing or anything else 401, except ``GET /``, the console's static pages and, in legacy open
    mode, any tokenless request. A gateway key sent anyway is still checked and scoped, and names the
    writer of raw entries."""
    expected = f"Bearer {token}".encode() if token else None
    metrics_expected = f"Bearer {metrics_token}".encode() if metrics_token else None

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request) or is_staging(request):
            # No principal: the pages read no data; the staging routes check their own ticket.
            return await handler(request)
        given = request.headers.get("Authorization", "")
        credential = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else ""
        if expected is not None and hmac.compare_digest(given.encode(), expected):
            request[PRINCIPAL] = ADMIN
        elif (
            metrics_expected is not None
            and request.method in METRICS_METHODS
            and request.path == METRICS_PATH
            and hmac.compare_digest(given.encode(), metrics_expected)
        ):
            request[PRINCIPAL] = ADMIN  # scoped by the route check above, not by the principal
        elif looks_like_gateway_key(credential):
            found = await request.app[GATEWAY].gateway_keys.identify(credential)
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
        elif legacy_open or (request.method, request.path) == LIVENESS:
            request[PRINCIPAL] = ADMIN
        else:
            raise Unauthorized(
                "missing or wrong API token: send 'Authorization: Bearer <token>' (the token is "
                "MAO_API_TOKEN, or the api-token file in the orchestrator's data dir; maoctl reads "
                "that file itself when run by the same user on the same host)"
            )
        return await handler(request)

    return check_token
