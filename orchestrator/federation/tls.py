"""etcd over TLS with a client certificate: the credentials, and an aetcd client that uses them.

aetcd 1.0 only opens plain channels, so ``TlsClient`` replaces its ``connect`` with the same steps over
``grpc.aio.secure_channel``. The server's certificate is checked against the federation CA and the
endpoint's host (etcd's certificates carry each member's IP and loopback, see ``ctl.pki``); etcd in
turn accepts only a client certificate the same CA signed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aetcd
import aetcd.rpc as rpc
import aetcd.watcher
import grpc


@dataclass(frozen=True)
class EtcdTls:
    """PEM bytes of the federation CA and of this instance's client certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)  # never in a log line or a traceback's locals

    @classmethod
    def from_files(cls, ca: Path, cert: Path, key: Path) -> EtcdTls:
        # Read once at start (small files): a renewed certificate takes effect at the next restart.
        return cls(ca.read_bytes(), cert.read_bytes(), key.read_bytes())

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


# aetcd ships no type information (Client is Any to mypy); replacing its connect is how TLS comes in
# (module docstring), so the subclass stays.
class TlsClient(aetcd.Client):  # type: ignore[misc]
    """``aetcd.Client`` over TLS; everything but how the channel is opened is aetcd's own."""

    _is_connecting: bool  # aetcd's, set in its __init__ (untyped there)

    def __init__(self, *args: Any, tls: EtcdTls, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # another task is opening the channel: wait for it, as aetcd does
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            # Opening a channel does no I/O: a refused handshake shows as UNAVAILABLE on the first call.
            self.channel = grpc.aio.secure_channel(
                target, self._tls.credentials(), options=list(self._options.items())
            )
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


def make_client(
    host: str, port: int, timeout: float, options: dict[str, Any], tls: EtcdTls | None
) -> aetcd.Client:
    if tls is None:
        return aetcd.Client(host=host, port=port, timeout=timeout, options=options)
    return TlsClient(host=host, port=port, timeout=timeout, options=options, tls=tls)
