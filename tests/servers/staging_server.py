"""The orchestrator's two staging routes (orchestrator/api/staging.py) served alone, for the backend
contract suite and the bench: a fetch-mode backend's pods fetch and upload here exactly as they would
from a whole orchestrator (the same handlers, the same error middleware, the same FetchExchange
folder), without the rest of it. Runs in a thread with its own event loop, for the whole session."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .process import LOCALHOST, free_port


@dataclass
class StagingServer:
    url: str
    root: Path
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _runner: web.AppRunner

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


async def _alive(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def start_staging_server(
    root: Path, *, max_output_bytes: int | None = None, host: str = LOCALHOST, port: int | None = None
) -> StagingServer:
    from orchestrator.api import staging
    from orchestrator.app import error_middleware
    from orchestrator.executors.fetch import FetchExchange

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="staging-server", daemon=True)
    thread.start()
    port = port or free_port()

    async def serve() -> web.AppRunner:
        app = web.Application(middlewares=[error_middleware])
        app.router.add_routes(staging.routes)
        # The liveness answer the orchestrator gives (GET /, no token): the pods' staging scripts
        # wait for it before a transfer.
        app.router.add_get("/", _alive)
        app[staging.STAGING] = FetchExchange(root, max_output_bytes=max_output_bytes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(serve(), loop).result(30)
    return StagingServer(f"http://{host}:{port}", root, loop, thread, runner)
