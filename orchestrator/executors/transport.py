"""How the orchestrator's HTTP session reaches an executor and proves it is the right one before a
byte is sent (docs/security.md#transports): the executor token and every step's private variables
travel on this session.

- ``unix:///path``: the socket and its folder belong to this user or root, and the kernel says the
  listening process runs as one of them (``executor.transport``);
- ``https://``: the executor's certificate must be the pinned one (SHA-256 of its DER form), checked
  right after the TLS handshake;
- ``http://``: only on loopback with MAO_EXECUTOR_INSECURE_TCP=1 (config refuses anything else): tests.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp

from executor.transport import check_peer, check_socket_file, trusted_uids, unix_socket_path

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

# The host name requests over a Unix socket carry (the executor ignores it).
UNIX_BASE = "http://executor"


class TrustedUnixConnector(aiohttp.UnixConnector):
    """A Unix-socket connector that hands aiohttp a connection only once the server is proven."""

    def __init__(self, path: str, trusted: frozenset[int]) -> None:
        super().__init__(path)
        self._trusted = trusted

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        await asyncio.to_thread(check_socket_file, self.path, self._trusted)
        protocol = await super()._create_connection(req, traces, timeout)
        transport = protocol.transport
        try:
            assert transport is not None
            check_peer(transport.get_extra_info("socket"), self.path, self._trusted)
        except BaseException:
            if transport is not None:
                transport.close()
            raise
        return protocol


def session_target(url: str, fingerprint: bytes | None) -> tuple[aiohttp.BaseConnector | None, str]:
    """The connector for ``url`` (None: aiohttp's default) and the base URL requests are made on."""
    path = unix_socket_path(url)
    if path is not None:
        return TrustedUnixConnector(path, trusted_uids()), UNIX_BASE
    if fingerprint is not None:
        # aiohttp skips a Fingerprint on a connection without TLS: config allows a pin with https only.
        return aiohttp.TCPConnector(ssl=aiohttp.Fingerprint(fingerprint)), url
    return None, url
