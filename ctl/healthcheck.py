"""``python -m ctl.healthcheck URL [TOKEN_VARIABLE]``: the compose healthcheck of the orchestrator and
the executor. Exit 0 when ``URL`` answers 200 within 5 s, 1 otherwise (a 503 "degraded" included).

``URL`` is ``unix:///path/to.sock`` (its ``GET /health``, over the socket, proven to be served by a
trusted user before anything is sent: ``executor.transport``) or an http(s) URL.

The token, when the named environment variable holds one, goes in an ``Authorization: Bearer`` header:
the executor guards even /health, and the container already has the variable from its env file (``executor.env``, ``mao.env``). It is
read here, never put on a command line (``docker inspect`` shows a healthcheck's arguments).
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request

from executor.transport import UnixHTTPConnection, UntrustedServer, trusted_for_socket, unix_socket_path

TIMEOUT = 5.0


def _socket_status(path: str, headers: dict[str, str]) -> int:
    connection = UnixHTTPConnection(path, trusted_for_socket(path), timeout=TIMEOUT)
    try:
        connection.request("GET", "/health", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: python -m ctl.healthcheck URL [TOKEN_VARIABLE]\n")
        return 2
    token = os.environ.get(argv[2], "") if len(argv) == 3 else ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        if (path := unix_socket_path(argv[1])) is not None:
            return 0 if _socket_status(path, headers) == 200 else 1
        request = urllib.request.Request(argv[1], headers=headers)
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - our own URL
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError, http.client.HTTPException, UntrustedServer) as exc:
        sys.stderr.write(f"{argv[1]}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
