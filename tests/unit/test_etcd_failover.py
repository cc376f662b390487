"""``FailoverClient._call``'s rounds: an election is waited out (bounded), an outage is not."""

from __future__ import annotations

import time
from collections.abc import Callable

import aetcd
import aetcd.exceptions
import grpc
import pytest

from orchestrator.errors import BadRequest, Conflict, EtcdUnavailable, MaoError
from orchestrator.federation import failover
from orchestrator.federation.failover import FailoverClient


class Placeholder:
    async def close(self) -> None:
        return None


class Endpoints(FailoverClient):
    """Two endpoints whose clients are placeholders: the operation decides what each call does."""

    def __init__(self) -> None:
        super().__init__([("127.0.0.1", 1), ("127.0.0.1", 2)])

    async def _get_client(self) -> aetcd.Client:
        if self._client is None:
            self._client = Placeholder()
        return self._client


def answers(*errors: str) -> tuple[Callable[[aetcd.Client], object], list[float]]:
    """An operation failing with ``errors`` in turn (each an endpoint's answer), then succeeding."""
    calls: list[float] = []

    async def operation(_client: aetcd.Client) -> str:
        calls.append(time.monotonic())
        if len(calls) <= len(errors):
            raise aetcd.exceptions.ConnectionFailedError(errors[len(calls) - 1])
        return "ok"

    return operation, calls


async def test_a_request_waits_for_the_members_to_elect_a_leader() -> None:
    etcd = Endpoints()
    operation, calls = answers("etcdserver: no leader", "failed to connect", "etcdserver: no leader")
    try:
        assert await etcd._call(operation) == "ok"  # type: ignore[arg-type]
    finally:
        await etcd.close()
    assert len(calls) == 4 and calls[-1] - calls[0] >= failover.ELECTION_POLL
    assert etcd.available is True


async def test_without_a_quorum_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failover, "ELECTION_GRACE", 0.5)
    etcd = Endpoints()
    operation, calls = answers(*["etcdserver: no leader"] * 1000)
    started = time.monotonic()
    try:
        with pytest.raises(EtcdUnavailable, match="no leader"):
            await etcd._call(operation)  # type: ignore[arg-type]
    finally:
        await etcd.close()
    assert 0.5 <= time.monotonic() - started < 30 and len(calls) > 2
    assert etcd.available is False


async def test_unreachable_endpoints_fail_at_once() -> None:
    etcd = Endpoints()
    operation, calls = answers("failed to connect to all addresses", "failed to connect to all addresses")
    try:
        with pytest.raises(EtcdUnavailable, match="unreachable"):
            await etcd._call(operation)  # type: ignore[arg-type]
    finally:
        await etcd.close()
    assert len(calls) == 2  # one round: no election to wait for


def raw(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def raw_answers(*errors: grpc.aio.AioRpcError) -> tuple[Callable[[aetcd.Client], object], list[float]]:
    """Like ``answers``, for calls made on aetcd's stubs directly (their errors are gRPC's own)."""
    calls: list[float] = []

    async def operation(_client: aetcd.Client) -> str:
        calls.append(time.monotonic())
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return operation, calls


async def test_a_follower_timing_out_while_its_leader_is_gone_is_an_election() -> None:
    # What CI met: the follower first asked had not yet noticed the leader's death, waited, and
    # answered UNKNOWN "context deadline exceeded"; the dead leader did not answer at all.
    etcd = Endpoints()
    operation, calls = raw_answers(
        raw(grpc.StatusCode.UNKNOWN, "context deadline exceeded"),
        raw(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"),
        raw(
            grpc.StatusCode.UNAVAILABLE,
            "etcdserver: request timed out, possibly due to previous leader failure",
        ),
    )
    try:
        assert await etcd._call(operation) == "ok"  # type: ignore[arg-type]
    finally:
        await etcd.close()
    assert len(calls) == 4


REFUSALS: dict[grpc.StatusCode, type[Exception]] = {
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
}


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
@pytest.mark.parametrize("details", ["", "etcdserver: something new", "context deadline exceeded"])
async def test_every_grpc_answer_has_a_meaning(
    code: grpc.StatusCode, details: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever code and words a member answers a direct call with, the caller gets the project's
    own error (an answer that refuses the request, or etcd unavailable), never an unclassified one
    (which the API would show as a 500)."""
    monkeypatch.setattr(failover, "ELECTION_GRACE", 0.3)
    etcd = Endpoints()
    operation, _calls = raw_answers(*[raw(code, details)] * 1000)
    try:
        with pytest.raises(MaoError) as caught:
            await etcd._call(operation)  # type: ignore[arg-type]
    finally:
        await etcd.close()
    expected = REFUSALS.get(code, EtcdUnavailable)
    assert type(caught.value) is expected or (
        expected is EtcdUnavailable and isinstance(caught.value, EtcdUnavailable)
    ), (code, details, caught.value)
