"""A tiny HTTP server answering canned JSON, for maoctl's commands whose server side is not on this
branch yet (federation, locks). Integration tests use the real orchestrator instead."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Routes = dict[tuple[str, str], tuple[int, Any]]


class FakeApi:
    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []
        self.url = ""


@contextmanager
def fake_api(routes: Routes) -> Iterator[FakeApi]:
    api = FakeApi(routes)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            api.requests.append((self.command, self.path, body, dict(self.headers)))
            status, payload = api.routes.get(
                (self.command, self.path),
                (404, {"error": "not_found", "message": f"no such endpoint: {self.path}"}),
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
