"""The ``fetch`` data mode's two routes (orchestrator/executors/fetch.py, docs/backends.md#fetch).

``GET /staging/{attempt}/input`` answers the attempt's input tarball; ``PUT /staging/{attempt}/output``
takes its output tarball. Both are called by the staging containers of a pod, never by people: they
need no API token (a pod must never hold it) but the attempt's own single-use ticket token, as
``Authorization: Bearer <token>``, accepted once and until it expires. The Host guard still applies
(the name pods reach the orchestrator by must be in ``MAO_API_HOSTNAMES``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import BaseModel

from ..errors import BadRequest
from ..executors.fetch import FetchExchange, read_file
from .openapi import doc

routes = web.RouteTableDef()
STAGING: web.AppKey[FetchExchange] = web.AppKey("staging", FetchExchange)
INPUT_PATH = "/staging/{attempt}/input"
OUTPUT_PATH = "/staging/{attempt}/output"


class Accepted(BaseModel):
    attempt: str
    bytes: int


def is_staging(request: web.Request) -> bool:
    """The two staging routes: checked by their ticket, not by the API token (access.py)."""
    parts = request.path.split("/")
    return (
        len(parts) == 4
        and parts[1] == "staging"
        and (request.method, parts[3]) in (("GET", "input"), ("HEAD", "input"), ("PUT", "output"))
    )


def _token(request: web.Request) -> str:
    given = request.headers.get("Authorization", "")
    return given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else ""


@routes.get(INPUT_PATH)
@doc(
    "An attempt's input tarball (input/ and data/), for its stage-in container: once, with the "
    "attempt's input ticket as the bearer token",
    content_type="application/x-tar",
    errors=(400, 401, 404, 409),
    staging=True,
    tags=("staging",),
)
async def staging_input(request: web.Request) -> web.StreamResponse:
    exchange = request.app[STAGING]
    path = await exchange.open_input(request.match_info["attempt"], _token(request))
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar", "Cache-Control": "no-store"})
    response.content_length = path.stat().st_size
    await response.prepare(request)
    async for chunk in read_file(path):
        await response.write(chunk)
    await response.write_eof()
    return response


@routes.put(OUTPUT_PATH)
@doc(
    "An attempt's output tarball, from its stage-out container (only after the tool succeeded): "
    "once, with the attempt's output ticket as the bearer token; unpacked under the output's rules",
    answer=Accepted,
    raw_body="application/x-tar",
    errors=(400, 401, 404, 409, 413),
    staging=True,
    tags=("staging",),
)
async def staging_output(request: web.Request) -> web.Response:
    exchange = request.app[STAGING]
    attempt = request.match_info["attempt"]
    if not request.body_exists:
        raise BadRequest("the request has no body: send the output tarball", code="upload_empty")

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(1 << 16):
            yield chunk

    total = await exchange.accept_output(attempt, _token(request), body(), request.content_length)
    return web.json_response(Accepted(attempt=attempt, bytes=total).model_dump())
