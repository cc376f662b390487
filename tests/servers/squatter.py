"""A local attacker for transport tests: a process running as another, unprivileged user (uid 65534)
that takes the addresses a service uses while it restarts, answers like a server would, and reports
everything it receives.

It runs as the system's python (``/usr/bin/python3``, stdlib only, the script passed on the command
line), so nothing of the test's own environment (a venv under a private home) needs to be readable by
that user. Its reports are JSON lines on stdout: ``listening``/``refused`` per address, then
``connection`` and ``data`` (base64) events.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

NOBODY = 65534
PYTHON = "/usr/bin/python3"

SCRIPT = r"""
import base64, json, os, socket, ssl, sys, threading, time
spec = json.loads(sys.argv[1])
lock = threading.Lock()

def say(**event):
    with lock:
        print(json.dumps(event), flush=True)

def read(conn, where, context):
    try:
        if context is not None:
            conn = context.wrap_socket(conn, server_side=True)
        conn.settimeout(5)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            say(event="data", where=where, data=base64.b64encode(data).decode())
            if b"\r\n\r\n" in data:  # answer like the real server would, to be told more
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    except Exception as exc:
        say(event="closed", where=where, error=repr(exc))
    finally:
        conn.close()

def serve(sock, where, context):
    sock.listen(16)
    while True:
        conn, _ = sock.accept()
        say(event="connection", where=where)
        threading.Thread(target=read, args=(conn, where, context), daemon=True).start()

context = None
if spec.get("cert"):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(spec["cert"], spec["key"])
for port in spec.get("tcp", []):
    where = "tcp:%d" % port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        say(event="refused", where=where, error=repr(exc))
        continue
    say(event="listening", where=where)
    threading.Thread(target=serve, args=(sock, where, context), daemon=True).start()
for path in spec.get("unix", []):
    where = "unix:" + path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o777)
    except OSError as exc:
        say(event="refused", where=where, error=repr(exc))
        continue
    say(event="listening", where=where)
    threading.Thread(target=serve, args=(sock, where, context), daemon=True).start()
say(event="ready", uid=os.getuid())
time.sleep(3600)
"""


@dataclass
class Squatter:
    """A running squatter; ``events`` fills in as it reports."""

    process: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def start(
        cls, tcp: list[int] = (), unix: list[str] = (), cert: str | None = None, key: str | None = None  # type: ignore[assignment]
    ) -> Squatter:
        spec = {"tcp": list(tcp), "unix": list(unix), "cert": cert, "key": key}
        process = subprocess.Popen(
            [PYTHON, "-I", "-c", SCRIPT, json.dumps(spec)],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd="/",
        )
        squatter = cls(process)
        ready = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "output", "line": line}
                squatter.events.append(event)
                if event.get("event") == "ready":
                    ready.set()
            ready.set()

        squatter._reader = threading.Thread(target=read, daemon=True)
        squatter._reader.start()
        if not ready.wait(30) or not any(e.get("event") == "ready" for e in squatter.events):
            squatter.stop()
            raise RuntimeError(f"the squatter did not start: {squatter.events}")
        assert [e["uid"] for e in squatter.events if e.get("event") == "ready"] == [NOBODY]
        return squatter

    def where(self, event: str) -> set[str]:
        return {e["where"] for e in self.events if e.get("event") == event}

    def received(self) -> bytes:
        """Everything any client sent it (decrypted, for TLS)."""
        return b"".join(base64.b64decode(e["data"]) for e in self.events if e.get("event") == "data")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        if self._reader is not None:
            self._reader.join(10)
