"""Endpoint failover under ``Etcd``: one aetcd client at a time, the next endpoint when it fails.

``FailoverClient._call`` runs an operation against the current endpoint and moves on to the next one
when it does not answer, translating aetcd and gRPC errors into the project's own (``EtcdUnavailable``
once no endpoint answered). It also tracks whether etcd is reachable, logs the change once, and
calls back those waiting for etcd to answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aetcd
import aetcd.exceptions
import grpc

from ..errors import BadRequest, Conflict, EtcdUnavailable
from .tls import EtcdTls, make_client

log = logging.getLogger("orchestrator.federation.etcd")
T = TypeVar("T")

# gRPC metadata etcd reads as "fail instead of waiting when this member has no leader".
REQUIRE_LEADER = (("hasleader", "true"),)
# Each client gets its own connections: by default gRPC shares them process-wide, so a member that
# was down stays "failing" (in reconnect backoff, up to minutes) for every new client after it is back.
CHANNEL_OPTIONS = {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
}
# How long a request keeps trying while the members elect a leader (etcd's default election timeout is
# 1 s; an election after a leader's death takes one to two), and how often it asks again meanwhile.
ELECTION_GRACE = 3.0
ELECTION_POLL = 0.2
_UNREACHABLE = (
    TimeoutError,
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
)


class FailoverClient:
    def __init__(
        self, endpoints: Sequence[tuple[str, int]], timeout: float = 5.0, tls: EtcdTls | None = None
    ) -> None:
        """``tls``: the CA and client certificate to reach etcd with; None only for a plain-HTTP etcd
        the operator asked for explicitly (``MAO_ETCD_INSECURE=1``)."""
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.tls = tls
        self._current = 0
        self._client: aetcd.Client | None = None
        self._switch_lock = asyncio.Lock()
        self.available: bool | None = None  # None until the first request
        self._listeners: list[Callable[[], None]] = []
        self._retiring: dict[asyncio.Task[None], aetcd.Client] = {}

    @property
    def scheme(self) -> str:
        """How etcd's client URLs start for this client: ``https`` over TLS."""
        return "https" if self.tls is not None else "http"

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._current]
        return f"{host}:{port}"

    async def close(self) -> None:
        for task, client in list(self._retiring.items()):
            task.cancel()
            await close_quietly(client)
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def on_available(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (synchronously, keep it short) whenever etcd answers again after failing."""
        self._listeners.append(callback)

    def _mark(self, available: bool, reason: str = "") -> None:
        if available == self.available:
            return
        previous, self.available = self.available, available
        if not available:
            log.warning("etcd became unreachable, federation work waits for it: %s", reason)
        elif previous is False:
            log.info("etcd answers again (via %s): resuming federation work", self.endpoint)
            for callback in self._listeners:
                callback()

    # -- failover -------------------------------------------------------------------------------
    async def _call(self, operation: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run ``operation`` against the current endpoint, moving on to the next ones when it does
        not answer. Operations must be safe to repeat (reads, puts, compare-and-set). When none
        answered but one said it has no leader (its members are electing one, e.g. after the leader
        died), the round is tried again for up to ``ELECTION_GRACE``: an election is not an outage.
        Without a quorum that member says so until the grace ends, and the request then fails."""
        loop = asyncio.get_running_loop()
        electing_until = loop.time() + ELECTION_GRACE
        while True:
            errors: list[str] = []
            with contextlib.suppress(_NoAnswer):
                return await self._each_endpoint(operation, errors)
            if not any(_electing(e) for e in errors) or loop.time() >= electing_until:
                break
            await asyncio.sleep(ELECTION_POLL)
        reason = "; ".join(errors)
        self._mark(False, reason)
        tls_hint = (
            " and that MAO_ETCD_CERT was issued by the federation's CA (MAO_ETCD_CA)"
            if self.tls is not None
            else " (etcd is reached over plain HTTP: a member that requires TLS refuses it)"
        )
        raise EtcdUnavailable(
            f"etcd is unreachable (tried {reason}). Check MAO_ETCD_ENDPOINTS, that "
            f"a majority of the federation's etcd members is up{tls_hint}."
        )

    async def _each_endpoint(self, operation: Callable[[aetcd.Client], Awaitable[T]], errors: list[str]) -> T:
        """One round of ``_call``: each endpoint at most once, what each said into ``errors``;
        ``_NoAnswer`` when none answered (an answer that refuses the request raises at once)."""
        for _ in range(len(self.endpoints)):
            client = await self._get_client()
            try:
                try:
                    result = await operation(client)
                except grpc.aio.AioRpcError as raw:  # calls aetcd does not wrap (members, ranges)
                    raise as_client_error(raw) from raw
            except _UNREACHABLE as exc:
                if "unhealthy cluster" in str(exc):  # a membership change refused by etcd itself
                    raise EtcdUnavailable(
                        "etcd refused the change: it considers the cluster unhealthy (a member is down "
                        "or started less than 5 s ago); try again shortly",
                        code="etcd_unhealthy",
                    ) from exc
                errors.append(f"{self.endpoint}: {short(exc)}")
                await self._next_endpoint(client)
            except aetcd.exceptions.PreconditionFailedError as exc:
                raise Conflict(f"etcd refused the change: {short(exc)}", code="etcd_refused") from exc
            except aetcd.exceptions.InvalidArgumentError as exc:
                raise BadRequest(f"etcd refused the request: {short(exc)}", code="etcd_refused") from exc
            except aetcd.exceptions.ClientError as exc:
                if "lease not found" in str(exc):  # an answer, not an outage: the lease expired
                    raise LeaseNotFound(f"etcd failed: {short(exc)}") from exc
                if "space exceeded" in str(exc):  # every member says the same: no other endpoint helps
                    raise EtcdUnavailable(
                        "etcd refuses writes: its database reached its quota (a NOSPACE alarm is raised). "
                        "An operator compacts, defragments and disarms it: docs/operations.md, "
                        "\"etcd's quota\"",
                        code="etcd_no_space",
                    ) from exc
                if "not found" in str(exc):
                    raise EtcdUnavailable(f"etcd failed: {short(exc)}") from exc
                # Anything else (an internal error, a stream cut by a dying member, a deadline passed
                # on the server's side) is this endpoint's problem: the next one may answer.
                errors.append(f"{self.endpoint}: {short(exc)}")
                await self._next_endpoint(client)
            else:
                self._mark(True)
                return result
        raise _NoAnswer

    async def _get_client(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.endpoints[self._current]
            self._client = _client(host, port, self.timeout, self.tls)
        return self._client

    async def _next_endpoint(self, failed: aetcd.Client) -> None:
        async with self._switch_lock:
            if self._client is failed:  # another task may have switched already
                self._client = None
                self._current = (self._current + 1) % len(self.endpoints)
                # Said once per outage: while etcd is known to be away, every call cycles through.
                level = logging.DEBUG if self.available is False else logging.INFO
                log.log(level, "etcd endpoint switched to %s", self.endpoint)
                task = asyncio.create_task(self._retire(failed), name="retire etcd client")
                self._retiring[task] = failed
                task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def _retire(self, client: aetcd.Client) -> None:
        # Closed later, not now: closing a channel cancels the calls other tasks still have on it, and
        # grpc reports that as asyncio.CancelledError in *their* task. Those calls end by their own
        # timeout first; a watch on it then ends and is re-established on the next endpoint.
        await asyncio.sleep(self.timeout + 1)
        await close_quietly(client)


class _NoAnswer(Exception):
    """No endpoint answered in one round of ``FailoverClient._call``."""


# What a member that is up says when it cannot get a request committed: it has no leader
# (``REQUIRE_LEADER``'s answer), its leader changed under the request, or the request timed out on its
# side waiting for one (a follower that has not yet noticed its leader died waits, then answers
# "context deadline exceeded"). An election ends within the grace; a lost quorum does not.
_BETWEEN_LEADERS = ("no leader", "leader changed", "context deadline exceeded", "request timed out")


def _electing(error: str) -> bool:
    """Whether an endpoint's error says it is up but between leaders."""
    return any(phrase in error for phrase in _BETWEEN_LEADERS)


# aetcd's own meaning of gRPC's codes (``aetcd.exceptions``), for the calls made on its stubs directly.
_CLIENT_ERRORS: dict[grpc.StatusCode, type[aetcd.exceptions.ClientError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: aetcd.exceptions.ConnectionTimeoutError,
    grpc.StatusCode.FAILED_PRECONDITION: aetcd.exceptions.PreconditionFailedError,
    grpc.StatusCode.INTERNAL: aetcd.exceptions.InternalError,
    grpc.StatusCode.INVALID_ARGUMENT: aetcd.exceptions.InvalidArgumentError,
    grpc.StatusCode.UNAVAILABLE: aetcd.exceptions.ConnectionFailedError,
    grpc.StatusCode.UNAUTHENTICATED: aetcd.exceptions.UnauthenticatedError,
}


def as_client_error(raw: grpc.aio.AioRpcError) -> aetcd.exceptions.ClientError:
    """A raw gRPC error as the aetcd error aetcd would have raised for it, so that one set of rules
    says what every answer means (an unknown code is a ``ClientError``: this endpoint's problem)."""
    return _CLIENT_ERRORS.get(raw.code(), aetcd.exceptions.ClientError)(raw.details() or str(raw.code()))


class LeaseNotFound(EtcdUnavailable):
    """The lease named in a request has expired or was revoked (callers may grant a new one)."""

    code = "etcd_lease_not_found"


def _client(host: str, port: int, timeout: float, tls: EtcdTls | None) -> aetcd.Client:
    client = make_client(host, port, timeout, CHANNEL_OPTIONS, tls)
    # Read by aetcd at connect time for every call and the watcher (it is only overwritten when
    # etcd authentication is configured, which MAO does not use).
    client.metadata = REQUIRE_LEADER
    return client


async def close_quietly(client: aetcd.Client) -> None:
    with contextlib.suppress(Exception):  # closing a dead channel may fail in many ways
        await asyncio.wait_for(client.close(), 2)


def short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
