"""The fake Kubernetes API's HTTP side (kube_fake.py has the store, the Job controller and what it
is for): the endpoints the backend calls, and the tests' side door for injecting failures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import secrets
import time
from typing import Any

from aiohttp import web

from .kube_fake import Fake, Json, Options, fail, flag, matches, merge, status_body

# -- the HTTP side -------------------------------------------------------------------------------------

routes = web.RouteTableDef()
FAKE: web.AppKey[Fake] = web.AppKey("fake", Fake)


def fake_of(request: web.Request) -> Fake:
    return request.app[FAKE]


@web.middleware
async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
    fake = fake_of(request)
    if not request.path.startswith("/fake/") and request.headers.get("Authorization") != f"Bearer {fake.options.token}":
        raise fail(401, "Unauthorized", "Unauthorized")
    return await handler(request)


@routes.get("/version")
@routes.get("/version/")
async def version(request: web.Request) -> web.Response:
    return web.json_response({"major": "1", "minor": "30", "gitVersion": "v1.30.0-mao-fake", "platform": "linux/amd64"})


async def list_or_watch(request: web.Request, kind: str, ns: str | None) -> web.StreamResponse:
    fake = fake_of(request)
    selector = request.query.get("labelSelector")
    if flag(request, "watch"):
        return await watch(request, kind, ns, selector)
    items = fake.store.items(kind, ns, selector)
    return web.json_response(
        {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(fake.store.version)}, "items": items}
    )


async def watch(request: web.Request, kind: str, ns: str | None, selector: str | None) -> web.StreamResponse:
    store = fake_of(request).store
    since = int(request.query.get("resourceVersion") or store.version)
    timeout = float(request.query.get("timeoutSeconds") or 1800)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    if since < store.oldest:
        line = {"type": "ERROR", "object": status_body(410, "Expired", f"too old resource version: {since}")}
        await response.write(json.dumps(line).encode() + b"\n")
        return response
    epoch, ends = store.watch_epoch, time.monotonic() + timeout
    position = 0
    while time.monotonic() < ends and store.watch_epoch == epoch:
        while position < len(store.events):
            rv, k, n, event, obj = store.events[position]
            position += 1
            if rv <= since or k != kind or (ns is not None and n != ns):
                continue
            if not matches(obj["metadata"].get("labels") or {}, selector):
                continue
            await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")
        async with store.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(store.changed.wait(), min(5.0, max(0.01, ends - time.monotonic())))
    return response


@routes.get("/apis/batch/v1/namespaces/{ns}/jobs")
async def list_jobs(request: web.Request) -> web.StreamResponse:
    return await list_or_watch(request, "jobs", request.match_info["ns"])


@routes.post("/apis/batch/v1/namespaces/{ns}/jobs")
async def create_job(request: web.Request) -> web.Response:
    fake, ns = fake_of(request), request.match_info["ns"]
    body = await request.json()
    name = (body.get("metadata") or {}).get("name")
    if not name or (body.get("spec") or {}).get("template") is None:
        raise fail(422, "Invalid", "Job.batch is invalid: metadata.name and spec.template are required")
    if fake.store.get("jobs", ns, name) is not None:
        raise fail(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
    return web.json_response(await fake.create_job(ns, body), status=201)


@routes.get("/apis/batch/v1/namespaces/{ns}/jobs/{name}")
async def get_job(request: web.Request) -> web.Response:
    found = fake_of(request).store.get("jobs", request.match_info["ns"], request.match_info["name"])
    if found is None:
        raise fail(404, "NotFound", f'jobs.batch "{request.match_info["name"]}" not found')
    return web.json_response(found)


async def _delete_options(request: web.Request) -> Json:
    options: Json = dict(request.query)
    if request.can_read_body:
        with contextlib.suppress(ValueError):
            options.update(await request.json())
    return options


@routes.delete("/apis/batch/v1/namespaces/{ns}/jobs/{name}")
async def delete_job(request: web.Request) -> web.Response:
    options = await _delete_options(request)
    # Kubernetes' own default for Jobs deleted through the API is Orphan; the backend always says.
    job = await fake_of(request).delete_job(
        request.match_info["ns"], request.match_info["name"], str(options.get("propagationPolicy", "Orphan"))
    )
    if job is None:
        raise fail(404, "NotFound", f'jobs.batch "{request.match_info["name"]}" not found')
    return web.json_response(status_body(200, "", "") | {"status": "Success"})


@routes.get("/api/v1/namespaces/{ns}/pods")
async def list_pods(request: web.Request) -> web.StreamResponse:
    return await list_or_watch(request, "pods", request.match_info["ns"])


@routes.get("/api/v1/namespaces/{ns}/pods/{name}")
async def get_pod(request: web.Request) -> web.Response:
    found = fake_of(request).store.get("pods", request.match_info["ns"], request.match_info["name"])
    if found is None:
        raise fail(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
    return web.json_response(found)


@routes.delete("/api/v1/namespaces/{ns}/pods/{name}")
async def delete_pod(request: web.Request) -> web.Response:
    fake, ns, name = fake_of(request), request.match_info["ns"], request.match_info["name"]
    options = await _delete_options(request)
    pod = fake.store.get("pods", ns, name)
    if pod is None:
        raise fail(404, "NotFound", f'pods "{name}" not found')
    grace = options.get("gracePeriodSeconds")
    fake.spawn(fake.delete_pod(ns, name, None if grace is None else int(grace)))
    return web.json_response(pod)


@routes.post("/api/v1/namespaces/{ns}/pods/{name}/eviction")
async def evict_by_api(request: web.Request) -> web.Response:
    fake, ns, name = fake_of(request), request.match_info["ns"], request.match_info["name"]
    if fake.store.get("pods", ns, name) is None:
        raise fail(404, "NotFound", f'pods "{name}" not found')
    fake.spawn(fake.delete_pod(ns, name))
    return web.json_response(status_body(201, "", "") | {"status": "Success"}, status=201)


@routes.get("/api/v1/namespaces/{ns}/pods/{name}/log")
async def pod_log(request: web.Request) -> web.StreamResponse:
    fake, ns, name = fake_of(request), request.match_info["ns"], request.match_info["name"]
    pod = fake.store.get("pods", ns, name)
    if pod is None:
        raise fail(404, "NotFound", f'pods "{name}" not found')
    container = request.query.get("container", "")
    lines = fake.kubelet.log(pod, container, request.query.get("sinceTime"), flag(request, "follow"))
    if lines is None:
        raise fail(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: PodInitializing')
    stamps = flag(request, "timestamps")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    sent, limit = 0, fake.options.drop_logs_after
    async for stamp, line in lines:
        await response.write((stamp + b" " + line) if stamps else line)
        sent += 1
        if limit is not None and sent >= limit and fake.options.drop_logs_times != 0:
            if fake.options.drop_logs_times is not None:
                fake.options.drop_logs_times -= 1
            break  # an injected drop: the stream ends although the container runs on
    return response


def _secret_out(secret: Json) -> Json:
    shown = copy.deepcopy(secret)
    shown.pop("stringData", None)
    return shown


async def _store_secret(fake: Fake, ns: str, body: Json) -> Json:
    data = dict(body.get("data") or {})
    for key, value in (body.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    body["data"] = data
    body.pop("stringData", None)
    body["metadata"].setdefault("uid", secrets.token_hex(16))
    body["metadata"]["namespace"] = ns
    return await fake.store.put("secrets", body)


@routes.get("/api/v1/namespaces/{ns}/secrets")
async def list_secrets(request: web.Request) -> web.StreamResponse:
    return await list_or_watch(request, "secrets", request.match_info["ns"])


@routes.post("/api/v1/namespaces/{ns}/secrets")
async def create_secret(request: web.Request) -> web.Response:
    fake, ns = fake_of(request), request.match_info["ns"]
    body = await request.json()
    name = body["metadata"]["name"]
    if fake.store.get("secrets", ns, name) is not None:
        raise fail(409, "AlreadyExists", f'secrets "{name}" already exists')
    return web.json_response(_secret_out(await _store_secret(fake, ns, body)), status=201)


@routes.put("/api/v1/namespaces/{ns}/secrets/{name}")
async def replace_secret(request: web.Request) -> web.Response:
    fake, ns = fake_of(request), request.match_info["ns"]
    if fake.store.get("secrets", ns, request.match_info["name"]) is None:
        raise fail(404, "NotFound", f'secrets "{request.match_info["name"]}" not found')
    return web.json_response(_secret_out(await _store_secret(fake, ns, await request.json())))


@routes.patch("/api/v1/namespaces/{ns}/secrets/{name}")
async def patch_secret(request: web.Request) -> web.Response:
    fake, ns, name = fake_of(request), request.match_info["ns"], request.match_info["name"]
    secret = fake.store.get("secrets", ns, name)
    if secret is None:
        raise fail(404, "NotFound", f'secrets "{name}" not found')
    merge(secret, await request.json())
    return web.json_response(_secret_out(await fake.store.put("secrets", secret)))


@routes.delete("/api/v1/namespaces/{ns}/secrets/{name}")
async def delete_secret(request: web.Request) -> web.Response:
    if await fake_of(request).store.remove("secrets", request.match_info["ns"], request.match_info["name"]) is None:
        raise fail(404, "NotFound", f'secrets "{request.match_info["name"]}" not found')
    return web.json_response(status_body(200, "", "") | {"status": "Success"})


@routes.get("/api/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    fake = fake_of(request)
    return web.json_response({"kind": "NodeList", "metadata": {"resourceVersion": str(fake.store.version)}, "items": [fake.node()]})


# -- failure injection and inspection (no token: the tests' own side door) -----------------------------


@routes.post("/fake/config")
async def set_config(request: web.Request) -> web.Response:
    fake, body = fake_of(request), await request.json()
    if "drop_logs_after" in body:
        fake.options.drop_logs_after = body["drop_logs_after"]
        fake.options.drop_logs_times = body.get("drop_logs_times")
    if "node_labels" in body:
        fake.options.node_labels = dict(body["node_labels"])
    return web.json_response({"ok": True})


@routes.post("/fake/evict/{ns}/{name}")
async def kubelet_evict(request: web.Request) -> web.Response:
    fake, ns, name = fake_of(request), request.match_info["ns"], request.match_info["name"]
    pod = fake.store.get("pods", ns, name)
    if pod is None:
        raise fail(404, "NotFound", f'pods "{name}" not found')
    await fake.kubelet.stop(pod, 0)
    pod["status"].update(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    await fake.store.put("pods", pod)
    await fake.pod_ended(pod)
    return web.json_response({"ok": True})


@routes.post("/fake/drop-watches")
async def drop_watches(request: web.Request) -> web.Response:
    store = fake_of(request).store
    store.watch_epoch += 1
    async with store.changed:
        store.changed.notify_all()
    return web.json_response({"ok": True})


@routes.post("/fake/compact")
async def compact(request: web.Request) -> web.Response:
    store = fake_of(request).store
    store.oldest = store.version + 1
    store.watch_epoch += 1
    async with store.changed:
        store.changed.notify_all()
    return web.json_response({"ok": True})


@routes.get("/fake/objects")
async def objects(request: web.Request) -> web.Response:
    fake, instance = fake_of(request), request.query.get("instance")
    found = [
        f"{kind}/{name}"
        for (kind, _, name), obj in sorted(fake.store.objects.items())
        if instance is None or (obj["metadata"].get("labels") or {}).get("mao.instance") == instance
    ]
    return web.json_response({"objects": found, "containers": await fake.kubelet.containers(instance)})


async def serve(options: Options, port: int) -> None:
    fake = Fake(options)
    app = web.Application(middlewares=[auth], client_max_size=16 * 1024**2)
    app[FAKE] = fake
    app.router.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"kube fake listening on 127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.kubelet.close()
        await runner.cleanup()


