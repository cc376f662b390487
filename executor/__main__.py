"""``mao-executor`` / ``python -m executor``: load the settings or exit 2, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from aiohttp import web

from executor.app import create_app
from executor.config import Settings, load_settings
from executor.docker_runner import DockerRunner
from executor.runs import OPS_WORKERS, RunService
from executor.wire.errors import ConfigError

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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print("mao-executor: the configuration is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(2)
    if args.check_config:
        print(json.dumps(settings.describe(), indent=2))
        return 0

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not settings.is_loopback:
        log.warning(
            "Listening on %s, not loopback: anyone who can reach this port and learns the token controls "
            "the Docker engine (root on this host); firewall it.",
            settings.host,
        )
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        # Typically the port is taken; a traceback would bury the one line that matters.
        log.error("Cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    return 0


async def serve(settings: Settings) -> None:
    # One connection per short op, per container wait and per output follower (two per container:
    # a reconnecting reader may overlap the one it replaces).
    pool = OPS_WORKERS + 3 * settings.max_parallel + 14
    service = RunService(settings, DockerRunner(settings, max_pool_size=pool))
    app = create_app(settings, service, shutdown_grace=SHUTDOWN_GRACE)
    # handler_cancellation: a client that hangs up cancels its handler, which kills and removes its container.
    # The short shutdown_timeout only covers responses being written: runs were already stopped by the app.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info(
            "Executor %s listening on http://%s:%s (at most %d containers at once, pull=%s).",
            settings.instance,
            settings.host,
            settings.port,
            settings.max_parallel,
            settings.pull,
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
