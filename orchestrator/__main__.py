"""``python -m orchestrator`` / ``mao-orchestrator``: validate the configuration, then serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from aiohttp import web

from executor.transport import listen_private, remove_socket, socket_inode
from executor.wire.errors import settings_or_exit

from . import __version__, logs
from .api.health import warnings
from .app import create_app
from .config import load_settings
from .federation.members import NameTaken
from .private_files import ensure_api_token, tighten

log = logging.getLogger("orchestrator")


def main(argv: list[str] | None = None) -> int:
    # Everything this process creates (database, WAL, token, repositories) is its user's alone; no
    # file is ever world-readable, not even in the moment between creating and chmod-ing it.
    os.umask(0o077)
    parser = argparse.ArgumentParser(prog="mao-orchestrator", description="The MAO node daemon.")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration, print it and exit"
    )
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)

    settings = settings_or_exit(load_settings, "mao-orchestrator: the configuration cannot work:")
    if args.check_config:
        print(json.dumps(settings.describe(), indent=2))
        return 0

    logs.configure(settings.log_level, settings.log_format)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        tighten(settings.data_dir)
        settings = ensure_api_token(settings)
    except (OSError, RuntimeError) as exc:
        print(f"mao-orchestrator: cannot set up the API token: {exc}", file=sys.stderr)
        return 2
    for warning in warnings(settings):
        log.warning("%s", warning)
    # maoctl's way in on this host (docs/security.md#transports): a socket only this user can reach,
    # beside the token file, so the token never goes to whoever holds the TCP port.
    sockets = []
    if settings.api_socket is not None:
        try:
            sockets.append(listen_private(settings.api_socket))
        except OSError as exc:
            print(f"mao-orchestrator: cannot listen on {settings.api_socket}: {exc}", file=sys.stderr)
            return 1
        inode = socket_inode(settings.api_socket)
    try:
        web.run_app(
            create_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            sock=sockets or None,
            print=None,
            access_log=None,
        )
    except NameTaken as exc:
        print(f"mao-orchestrator: refusing to start: {exc.message}", file=sys.stderr)
        return 3
    finally:
        if settings.api_socket is not None and sockets:
            remove_socket(settings.api_socket, inode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
