"""What a browser loads: the web console (``/ui/``), the API reference page (``/api/docs``) and the
OpenAPI document (``/openapi.json``).

The pages are hand-written static files shipped in the package (``orchestrator/ui/``): no CDN, no
build step. They load without a token (they hold no data; ``is_public``) and ask for the API token
once, keep it in the browser's session storage and send it as a Bearer header with every API call,
so the data stays behind the same auth as any other client's. Only the files listed in ``FILES`` are
served: a path never reaches the file system from the request.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .openapi import build_document, doc

routes = web.RouteTableDef()

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
FILES = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "draw.js": "text/javascript",
    "runs.js": "text/javascript",
    "timeline.js": "text/javascript",
    "grid.js": "text/javascript",
    "lineage.js": "text/javascript",
    "pages.js": "text/javascript",
    "versions.js": "text/javascript",
    "views.js": "text/javascript",
    "console.css": "text/css",
    "docs.html": "text/html",
    "docs.js": "text/javascript",
}
HEADERS = {
    # Everything the pages need comes from this origin; nothing may frame them.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Filled on the first request (the router is complete by then); created empty with the app.
DOCUMENT: web.AppKey[dict[str, object]] = web.AppKey("openapi_document", dict)


def is_public(request: web.Request) -> bool:
    """The static pages and their files: served without a token."""
    if request.method not in ("GET", "HEAD"):
        return False
    path = request.path
    return path in ("/ui", "/api/docs") or path.startswith("/ui/")


def _file(name: str) -> web.Response:
    kind = FILES.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=(UI_DIR / name).read_bytes(), content_type=kind, charset="utf-8", headers=HEADERS
    )


@routes.get("/ui")
@doc("The web console (redirects to /ui/)", public=True, status=302, errors=(), tags=("console",))
async def ui_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
@doc("The web console", public=True, content_type="text/html", errors=(), tags=("console",))
async def ui_index(request: web.Request) -> web.Response:
    return _file("index.html")


@routes.get("/ui/{file}")
@doc("A file of the web console", public=True, content_type="text/plain", errors=(404,), tags=("console",))
async def ui_file(request: web.Request) -> web.Response:
    return _file(request.match_info["file"])


@routes.get("/api/docs")
@doc(
    "The API reference, rendered from /openapi.json",
    public=True,
    content_type="text/html",
    errors=(),
    tags=("console",),
)
async def api_docs(request: web.Request) -> web.Response:
    return _file("docs.html")


@routes.get("/openapi.json")
@doc("This API as an OpenAPI 3.1 document", answer=dict[str, object], errors=(), tags=("console",))
async def openapi_document(request: web.Request) -> web.Response:
    cached = request.app[DOCUMENT]
    if not cached:
        cached.update(build_document(request.app))
    return web.json_response(cached)
