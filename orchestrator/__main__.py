"""``python -m orchestrator`` / ``mao-orchestrator``: validate the configuration, then serve."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from aiohttp import web

from . import __version__, logs
from .app import create_app
from .config import load_settings
from .errors import ConfigError
from .federation.members import NameTaken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mao-orchestrator", description="The MAO node daemon.")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration, print it and exit"
    )
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print("mao-orchestrator: the configuration cannot work:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    if args.check_config:
        print(json.dumps(settings.describe(), indent=2))
        return 0

    logs.configure(settings.log_level, settings.log_format)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        web.run_app(
            create_app(settings), host=settings.api_host, port=settings.api_port, print=None, access_log=None
        )
    except NameTaken as exc:
        print(f"mao-orchestrator: refusing to start: {exc.message}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
