"""``python -m ctl.healthcheck URL [TOKEN_VARIABLE]``: the compose healthcheck of the orchestrator and
the executor. Exit 0 when ``URL`` answers 200 within 5 s, 1 otherwise (a 503 "degraded" included).

The token, when the named environment variable holds one, goes in an ``Authorization: Bearer`` header:
the executor guards even /health, and the container already has the variable from its env file (``executor.env``, ``mao.env``). It is
read here, never put on a command line (``docker inspect`` shows a healthcheck's arguments).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: python -m ctl.healthcheck URL [TOKEN_VARIABLE]\n")
        return 2
    request = urllib.request.Request(argv[1])
    token = os.environ.get(argv[2], "") if len(argv) == 3 else ""
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own loopback URL
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"{argv[1]}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
