"""maoctl's way to the orchestrator on this host: its Unix socket, proven before the token is sent.

Which transport a ``--url`` gets (docs/security.md#transports):
- ``unix:///path/api.sock``: that socket; the token is ``--token``/``MAO_API_TOKEN``, else the
  ``api-token`` file beside the socket;
- an http(s) URL on this host, with no token given: the local orchestrator's socket
  (``$MAO_DATA_DIR/api.sock``) with its token file, the URL's port unused. When the token file is
  there but the socket is not (the orchestrator is down), maoctl sends nothing at all and says so: a
  process holding the port meanwhile learns nothing, and cannot answer in the orchestrator's place.
  With neither (an orchestrator in the prototype's tokenless mode), the URL as it is, without a token;
- any other URL, or a token given explicitly: the URL as it is, with that token (the operator's
  choice; reach a remote orchestrator through https).

The socket is trusted when it and its folder belong to this user or root (for maoctl run as root, also
the owner of the folder: whose token it is anyway), the folder grants no one else write access, and
the kernel says the listening process runs as one of them (``executor.transport``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from executor.transport import connect_unix, trusted_for_socket, unix_socket_path

from .token import TOKEN_FILE, default_data_dir, is_loopback

SOCKET_FILE = "api.sock"
# The host name requests over the socket carry: one the API always accepts.
BASE_URL = "http://localhost"


@dataclass(frozen=True)
class Route:
    """Where maoctl's requests go: ``base`` (the URL, or BASE_URL over ``socket``) and the token."""

    base: str
    token: str | None
    socket: str | None = None
    # Why nothing may be sent: the local token file is there, its orchestrator's socket is not.
    refusal: str | None = None


def _token_beside(path: str) -> str | None:
    try:
        token = (Path(path).parent / TOKEN_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def route(url: str, token: str | None, data_dir: Path | None = None) -> Route:
    """Decide the transport and the token for ``url`` (see the module's docstring)."""
    path = unix_socket_path(url)
    if path is not None:
        return Route(BASE_URL, token or _token_beside(path), path)
    if token:
        return Route(url.rstrip("/"), token)
    if not is_loopback(urlsplit(url).hostname or ""):
        return Route(url.rstrip("/"), None)
    folder = data_dir or default_data_dir()
    local = folder / SOCKET_FILE
    if local.exists():
        return Route(BASE_URL, _token_beside(str(local)), str(local))
    refusal = None
    if (folder / TOKEN_FILE).exists():
        refusal = (
            f"the orchestrator of {folder} is not running: its socket {local} is not there (maoctl "
            f"sends nothing to {url} itself, which any local user could be holding while the "
            "orchestrator is down); start it, or give --url and --token explicitly"
        )
    return Route(url.rstrip("/"), None, refusal=refusal)


class _SocketConnection(HTTPConnection):
    def __init__(self, *args: Any, socket_path: str, trusted: frozenset[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._socket_path = socket_path
        self._trusted = trusted

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        return connect_unix(self._socket_path, self._trusted, timeout)


class _SocketPool(HTTPConnectionPool):
    ConnectionCls = _SocketConnection


class SocketAdapter(HTTPAdapter):
    """requests over the proven Unix socket ``path`` (mounted for every http:// URL of a session)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._pool = _SocketPool("localhost", socket_path=path, trusted=trusted_for_socket(path))

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        return self._pool

    def request_url(self, request: Any, proxies: Any) -> str:
        return str(request.path_url)

    def close(self) -> None:
        self._pool.close()
        super().close()


def session_for(target: Route) -> requests.Session:
    session = requests.Session()
    if target.socket is not None:
        session.trust_env = False  # no proxy applies to a local socket
        session.mount("http://", SocketAdapter(target.socket))
    return session
