"""The executor's HTTP face: routes, the shared-secret check and the one place errors become JSON."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import ValidationError

from executor.config import Settings
from executor.containers import Containers
from executor.hardening import check_docker_socket, tool_user
from executor.metrics import CONTENT_TYPE, ExecutorMetrics
from executor.output_stream import StreamBroken, output_stream
from executor.runs import RunService
from executor.wire.containers import MAX_HOLD, ContainerList, Removed, SubmitRequest
from executor.wire.errors import BadRequest, MaoError, NotFound, Unauthorized
from executor.wire.models import (
    MAX_BODY_BYTES,
    ContainerFields,
    ImageRequest,
    KillRequest,
    RunRequest,
    describe_validation_error,
)

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", RunService)
CONTAINERS = web.AppKey("containers", Containers)
SHUTDOWN_GRACE = web.AppKey("shutdown_grace", float)
METRICS = web.AppKey("metrics", ExecutorMetrics)

M = TypeVar("M", KillRequest, ImageRequest)
R = TypeVar("R", RunRequest, SubmitRequest)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ROUTES = (
    "GET /health, GET /metrics, POST /run, /validate, /kill and /image, GET and DELETE /logs/{container}, "
    "POST and GET /containers, GET and DELETE /containers/{name}, GET /containers/{name}/wait and /logs"
)
_HTTP_CODES = {
    404: ("not_found", f"no such endpoint: the executor serves {_ROUTES}"),
    405: ("method_not_allowed", f"method not allowed: the executor serves {_ROUTES}"),
    413: ("payload_too_large", f"request body larger than {MAX_BODY_BYTES} bytes"),
}


def error_response(error: MaoError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.status)
    if isinstance(error, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="mao-executor"'
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as ``{"error", "message"}``; never let a traceback reach the client."""
    try:
        return await handler(request)
    except MaoError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        return web.json_response({"error": code, "message": message}, status=exc.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("Unexpected error while serving %s %s", request.method, request.path)
        return web.json_response(
            {"error": "internal", "message": "internal error in the executor; see its log for details"},
            status=500,
        )


def auth_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Every route, /health included: even "is Docker up" is not for anonymous callers of a root service.
        scheme, _, provided = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(provided.strip().encode(), expected):
            raise Unauthorized("missing or wrong token: send 'Authorization: Bearer <MAO_EXECUTOR_TOKEN>'")
        return await handler(request)

    return check_token


async def health(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE].health())


async def run(request: web.Request) -> web.Response:
    run_request = await _run_request(request)
    metrics = request.app[METRICS]
    started = time.monotonic()
    metrics.containers.inc()
    outcome = "cancelled"  # the client hung up or the executor is shutting down
    try:
        result = await request.app[SERVICE].run(run_request)
        outcome = _outcome(result)
    except MaoError as exc:
        outcome = exc.code
        raise
    finally:
        metrics.containers.dec()
        metrics.runs.labels(outcome).inc()
        metrics.duration.observe(time.monotonic() - started)
    return web.json_response(result)


async def validate(request: web.Request) -> web.Response:
    """Check a /run body as /run would, without running it (the orchestrator's init asks this)."""
    return await _validated(request, await _run_request(request))


async def validate_submit(request: web.Request) -> web.Response:
    """Check a POST /containers body as a submit would, without creating anything."""
    return await _validated(request, await _run_request(request, SubmitRequest))


async def _validated(request: web.Request, body: ContainerFields) -> web.Response:
    settings = request.app[SETTINGS]
    check_docker_socket(body, settings)
    tool_user(body, settings.tool_uid, settings.tool_gid)
    await request.app[SERVICE].mount_sources(body)
    return web.json_response({"ok": True})


async def _run_request(request: web.Request, model: type[R] = RunRequest) -> R:  # type: ignore[assignment]
    body = await request.read()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError covers UnicodeDecodeError; deep nesting recurses
        raise BadRequest(f"the request body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object with at least 'image' and 'output_dir'")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None


def _outcome(result: dict[str, object]) -> str:
    if result.get("timed_out"):
        return "timed_out"
    return "succeeded" if result.get("exit_code") == 0 else "failed"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def _parse(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(json.loads(await request.read()))
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc}); send a JSON object") from None


async def kill(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE].kill(await _parse(request, KillRequest)))


async def image(request: web.Request) -> web.Response:
    body = await _parse(request, ImageRequest)
    return web.json_response({"id": await request.app[SERVICE].image_id(body.image)})


async def container_log(request: web.Request) -> web.StreamResponse:
    """A container's output as kept (``executor.output_log``): ``?follow=1`` streams new output until
    the container has ended. 404 when this executor has no log of that name (never run, or dropped)."""
    name = request.match_info["name"]
    follow = request.query.get("follow", "0")
    if follow not in ("0", "1"):
        raise BadRequest("follow must be 0 or 1")
    output = request.app[SERVICE].logs.get(name)
    if output is None:
        raise NotFound(f"no log of container {name!r} on this executor")
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for chunk in output.chunks(follow=follow == "1"):
            await response.write(chunk)
    except ConnectionError:  # the reader went away
        return response
    await response.write_eof()
    return response


async def drop_log(request: web.Request) -> web.Response:
    """Forget a container's log once the orchestrator has kept it."""
    dropped = await asyncio.to_thread(request.app[SERVICE].logs.drop, request.match_info["name"])
    return web.json_response({"deleted": dropped})


# -- submitted containers (executor/containers.py) ----------------------------------------------------


async def submit(request: web.Request) -> web.Response:
    body = await _run_request(request, SubmitRequest)
    state = await request.app[CONTAINERS].submit(body)
    return web.json_response(state.model_dump(mode="json"))


async def list_containers(request: web.Request) -> web.Response:
    instance = request.query.get("instance") or None
    found = await request.app[CONTAINERS].listing(instance)
    return web.json_response(ContainerList(containers=found).model_dump(mode="json"))


async def container_state(request: web.Request) -> web.Response:
    state = await request.app[CONTAINERS].state(request.match_info["name"])
    return web.json_response(state.model_dump(mode="json"))


def _number(request: web.Request, key: str, default: float, high: float) -> float:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{key} must be a number, got {raw!r}") from None
    if not 0 <= value <= high:
        raise BadRequest(f"{key} must be between 0 and {high:g}, got {raw}")
    return value


async def wait_container(request: web.Request) -> web.Response:
    """Long-poll: answers once the container has ended, or after ``hold`` seconds (at most
    MAX_HOLD) with its state so far; ``tail``: lines of output in the answer once it ended."""
    hold = _number(request, "hold", 30.0, MAX_HOLD)
    tail = int(_number(request, "tail", 0, 10000))
    state = await request.app[CONTAINERS].wait(request.match_info["name"], hold, tail)
    return web.json_response(state.model_dump(mode="json"))


async def submitted_log(request: web.Request) -> web.StreamResponse:
    """The container's output from byte ``since`` (``X-Mao-Log-Offset`` says where the body
    starts); ``follow=1`` streams until the container ended, and its answer starts only once the
    container has started. A stream that ends normally is whole; one that breaks off is cut (the
    connection closes without the last chunk), and the reader asks again with ``since`` = the
    bytes it has."""
    since = int(_number(request, "since", 0, 2**53))
    follow = request.query.get("follow", "0")
    if follow not in ("0", "1"):
        raise BadRequest("follow must be 0 or 1")
    name = request.match_info["name"]
    containers = request.app[CONTAINERS]
    await containers.ready(name, follow == "1")  # NotFound is only an answer before the body starts
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "X-Mao-Log-Offset": str(since)}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    service = request.app[SERVICE]
    chunks = output_stream(service.runner, service.followers, name, since, follow == "1")
    try:
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except StreamBroken:
        if request.transport is not None:
            request.transport.close()  # no final chunk: the reader sees a cut stream
    except ConnectionError:  # the reader went away
        pass
    finally:
        await chunks.aclose()
    return response


async def remove_container(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    removed = await request.app[CONTAINERS].remove(name)
    return web.json_response(Removed(name=name, removed=removed).model_dump(mode="json"))


async def _adopt(app: web.Application) -> None:
    try:
        adopted = await app[CONTAINERS].adopt()
    except MaoError as exc:
        log.warning("Submitted containers were not adopted yet: %s", exc.message)
        return
    if adopted:
        log.info("Watching again %d submitted container(s): %s.", len(adopted), ", ".join(adopted))


async def _close_containers(app: web.Application) -> None:
    await app[CONTAINERS].close()


async def _remove_leftovers(app: web.Application) -> None:
    instance = app[SETTINGS].instance
    try:
        removed = await app[SERVICE].remove_leftovers()
    except MaoError as exc:
        log.warning("Leftover containers of instance %s were not checked: %s", instance, exc.message)
        return
    if removed:
        log.info(
            "Removed %d leftover container(s) of instance %s from an earlier run: %s.",
            len(removed),
            instance,
            ", ".join(removed),
        )
    else:
        log.info("No leftover containers of instance %s to remove.", instance)


async def _stop_runs(app: web.Application) -> None:
    await app[SERVICE].stop(app[SHUTDOWN_GRACE])


async def _close_service(app: web.Application) -> None:
    await app[SERVICE].close()


def create_app(settings: Settings, service: RunService, shutdown_grace: float = 10.0) -> web.Application:
    """The executor app. On shutdown, runs still going after ``shutdown_grace`` seconds are killed."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(settings.token)], client_max_size=MAX_BODY_BYTES
    )
    app[SETTINGS] = settings
    app[SERVICE] = service
    app[SHUTDOWN_GRACE] = shutdown_grace
    app[METRICS] = ExecutorMetrics(settings.max_parallel)
    app[CONTAINERS] = containers = Containers(settings, service.runner, service)
    containers.on_end = lambda ending: app[METRICS].runs.labels(str(ending)).inc()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/run", run)
    app.router.add_post("/validate", validate)
    app.router.add_post("/kill", kill)
    app.router.add_post("/image", image)
    app.router.add_get(r"/logs/{name:[A-Za-z0-9][A-Za-z0-9_.-]{0,200}}", container_log)
    app.router.add_delete(r"/logs/{name:[A-Za-z0-9][A-Za-z0-9_.-]{0,200}}", drop_log)
    name = r"{name:[A-Za-z0-9][A-Za-z0-9_.-]{0,200}}"
    app.router.add_post("/containers", submit)
    app.router.add_get("/containers", list_containers)
    app.router.add_post("/containers/validate", validate_submit)
    app.router.add_get(f"/containers/{name}", container_state)
    app.router.add_delete(f"/containers/{name}", remove_container)
    app.router.add_get(f"/containers/{name}/wait", wait_container)
    app.router.add_get(f"/containers/{name}/logs", submitted_log)
    app.on_startup.append(_remove_leftovers)
    app.on_startup.append(_adopt)
    app.on_shutdown.append(_stop_runs)
    app.on_cleanup.append(_close_containers)
    app.on_cleanup.append(_close_service)
    return app
