"""A port of our own: a private network namespace where 127.0.0.1:PORT reaches a server of this session.

The prototype's curl samples name http://localhost:8080, which a demo node (``./scripts/demo.sh``)
or anything else on the host may hold. Rather than fail, the samples run inside a fresh network
namespace (``ip netns``) whose own 127.0.0.1:8080 is forwarded to the test's orchestrator, which
listens on a free port of the host. The listening socket is made inside the namespace by a thread that
enters it (setns applies to the calling thread only) and leaves again; everything else stays in the
host's namespace, so the orchestrator keeps reaching the session's etcd, executor and database.

Needs root (CAP_SYS_ADMIN) and iproute2; :func:`available` says whether this host has them.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

CLONE_NEWNET = 0x40000000


@functools.cache
def available() -> bool:
    """Whether a namespace can really be made here (root alone is not enough in every container)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or not os.path.exists("/proc/thread-self/ns/net"):
        return False
    probe = f"maotest-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError):
        return False
    try:
        _ip("netns", "del", probe)
    except (OSError, subprocess.SubprocessError):
        pass
    return True


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _listen_inside(namespace: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` of ``namespace``, made by a short-lived thread."""
    made: dict[str, object] = {}

    def work() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                made["socket"] = socket.create_server(("127.0.0.1", port))
            finally:
                _setns(own)  # the thread ends next anyway; this keeps it honest meanwhile
        except OSError as exc:
            made["error"] = exc
        finally:
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=work, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]  # type: ignore[misc]
    return made["socket"]  # type: ignore[return-value]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _serve(listener: socket.socket, target_port: int) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # the listener was closed: the namespace is going away
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=30)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)

        def both(client: socket.socket = client, upstream: socket.socket = upstream) -> None:
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join(timeout=120)
            client.close()
            upstream.close()

        threading.Thread(target=both, daemon=True).start()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def forwarded_port(port: int, target_port: int) -> Iterator[list[str]]:
    """A namespace where 127.0.0.1:``port`` reaches the host's 127.0.0.1:``target_port``.

    Yields the argv prefix that runs a command inside it (``ip netns exec NAME``).
    """
    name = f"maotest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        listener = _listen_inside(name, port)
        threading.Thread(target=_serve, args=(listener, target_port), daemon=True).start()
        try:
            yield ["ip", "netns", "exec", name]
        finally:
            listener.close()
    finally:
        _ip("netns", "del", name)
