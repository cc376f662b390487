"""``mao-executor`` / ``python -m executor``: load the settings or exit 2, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

from aiohttp import web

from executor.app import create_app
from executor.config import Settings, load_settings
from executor.docker_runner import DockerRunner
from executor.runs import OPS_WORKERS, RunService
from executor.tls import ensure_certificate, fingerprint_of, server_context
from executor.transport import format_fingerprint, listen_private, remove_socket, socket_inode
from executor.wire.errors import settings_or_exit

log = logging.getLogger("executor")

# On SIGTERM, in-flight runs get this long to finish before their containers are killed and removed;
# runs last up to days, so waiting for them is not an option, but a run ending right now may complete.
SHUTDOWN_GRACE = 10.0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mao-executor",
        description="Run MAO tool containers on this host's Docker engine, on behalf of the orchestrator. "
        "Configured by environment variables (MAO_EXECUTOR_TOKEN is required).",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="print the effective settings (token masked) and exit"
    )
    parser.add_argument(
        "--fingerprint",
        action="store_true",
        help="print the SHA-256 fingerprint of the TLS certificate (MAO_EXECUTOR_LISTEN=tls), generating "
        "the executor's own certificate if it has none yet, and exit: the orchestrator pins it "
        "(MAO_EXECUTOR_TLS_FINGERPRINT)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = settings_or_exit(load_settings, "mao-executor: the configuration is invalid:")
    if args.check_config:
        print(json.dumps(settings.describe(), indent=2))
        return 0
    # What this process creates (its socket, its key, containers' logs) is its user's alone.
    os.umask(0o077)
    if args.fingerprint:
        try:
            cert, _ = tls_files(settings)
        except (OSError, ValueError) as exc:
            print(f"mao-executor: no certificate: {exc}", file=sys.stderr)
            return 1
        print(format_fingerprint(fingerprint_of(cert)))
        return 0

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if settings.listen == "tcp":
        log.warning(
            "MAO_EXECUTOR_LISTEN=tcp: plain HTTP on %s:%s, for tests only. Any local user who listens on "
            "this port while the executor is down receives the token and every step's secrets; use the "
            "default Unix socket (or tls for an orchestrator on another host).",
            settings.host,
            settings.port,
        )
    elif settings.listen == "tls" and not settings.is_loopback:
        log.warning(
            "Listening on %s, not loopback: anyone who can reach this port and learns the token controls "
            "the Docker engine (root on this host); firewall it.",
            settings.host,
        )
    try:
        settings.data_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        listener = open_listener(settings)
    except (OSError, ValueError, ssl.SSLError) as exc:
        # Typically the port or the socket is taken; a traceback would bury the one line that matters.
        log.error("Cannot listen on %s: %s", settings.address, exc)
        return 1
    try:
        asyncio.run(serve(settings, listener))
    except OSError as exc:
        log.error("Cannot listen on %s: %s", settings.address, exc)
        return 1
    finally:
        if settings.socket_path is not None and listener.inode is not None:
            remove_socket(settings.socket_path, listener.inode)
    return 0


class Listener:
    """What ``serve`` listens on: a bound Unix socket, or TCP (with TLS when ``ssl`` is set)."""

    def __init__(self, sock: socket.socket | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.sock = sock
        self.ssl = ssl_context
        # The socket file's inode: at exit it is removed only if no other server has replaced it.
        self.inode = socket_inode(Path(sock.getsockname())) if sock is not None else None


def tls_files(settings: Settings) -> tuple[Path, Path]:
    if settings.tls_cert and settings.tls_key:
        return settings.tls_cert, settings.tls_key
    return ensure_certificate(settings.private_folder, settings.instance, settings.host)


def open_listener(settings: Settings) -> Listener:
    """Bind the Unix socket (before the event loop, so its mode is set while nothing else runs), or
    load the TLS certificate."""
    if settings.listen == "unix":
        assert settings.socket_path is not None
        return Listener(listen_private(settings.socket_path, owner=_data_root_owner(settings)))
    if settings.listen == "tls":
        cert, key = tls_files(settings)
        log.info("TLS certificate %s, fingerprint %s", cert, format_fingerprint(fingerprint_of(cert)))
        return Listener(ssl_context=server_context(cert, key))
    return Listener()


def _data_root_owner(settings: Settings) -> tuple[int, int] | None:
    """Run as root (a container with the Docker socket), the executor hands its socket to the owner of
    the data root: the orchestrator's user, the one client it serves."""
    if os.geteuid() != 0:
        return None
    info = settings.data_root.stat()
    return (info.st_uid, info.st_gid) if info.st_uid != 0 else None


async def serve(settings: Settings, listener: Listener | None = None) -> None:
    # One connection per short op, per container wait and per output follower (two per container:
    # a reconnecting reader may overlap the one it replaces).
    pool = OPS_WORKERS + 3 * settings.max_parallel + 14
    service = RunService(settings, DockerRunner(settings, max_pool_size=pool))
    app = create_app(settings, service, shutdown_grace=SHUTDOWN_GRACE)
    # handler_cancellation: a client that hangs up cancels its handler, which kills and removes its container.
    # The short shutdown_timeout only covers responses being written: runs were already stopped by the app.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    listener = listener or Listener()
    try:
        site: web.BaseSite
        if listener.sock is not None:
            site = web.SockSite(runner, listener.sock)
        else:
            site = web.TCPSite(runner, settings.host, settings.port, ssl_context=listener.ssl)
        await site.start()
        log.info(
            "Executor %s listening on %s (at most %d containers at once, pull=%s, data root %s).",
            settings.instance,
            settings.address,
            settings.max_parallel,
            settings.pull,
            settings.data_root,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("Executor %s stopping.", settings.instance)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
