"""What the etcd client hands back: key-values and watch events built by one parser, and a watch's ends.

``decode_kv`` is the one place a raw key-value of etcd's answer becomes a ``KeyValue`` (its value
decoded at the one edge, ``values``); ``too_large`` recognises an answer gRPC refused for its size.
A watch ends with ``HistoryCompacted`` (or ``WatchTooLarge``) when what it asked for cannot be sent:
its caller lists the keys again, then watches from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from .values import decode_key, decode_value, warn_once


class HistoryCompacted(Exception):
    """A watch asked for revisions etcd has compacted away: list the keys again, then watch."""

    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"etcd history was compacted up to revision {compacted_revision}")
        self.compacted_revision = compacted_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: Any
    mod_revision: int
    create_revision: int
    lease: int
    # Why ``value`` (then None) could not be decoded (``values.decode_value``); listings and watches
    # never hand such a value over, a single ``get`` does, so that its caller can name the key.
    problem: str | None = None


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: Any  # None for a DELETE
    revision: int
    lease: int = 0


class WatchTooLarge(HistoryCompacted):
    """The changes a watch would deliver at once do not fit in one gRPC message (a watch resumed far
    back over large values): list the keys again (in pages), then watch from there."""

    def __init__(self, detail: str) -> None:
        Exception.__init__(self, f"the changes to catch up on are too large for one answer ({detail})")
        self.compacted_revision = 0


def decode_kv(kv: Any) -> KeyValue | None:
    """A key-value of etcd's answer, its value decoded at the one edge (``values``); None when even
    its key cannot be read (not UTF-8: no MAO key)."""
    key = decode_key(kv.key)
    if key is None:
        warn_once(repr(bytes(kv.key))[:300], kv.mod_revision, "its key is not UTF-8")
        return None
    decoded = decode_value(kv.value)
    return KeyValue(
        key=key,
        value=decoded.value,
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
        lease=kv.lease,
        problem=decoded.problem,
    )


def too_large(exc: BaseException) -> bool:
    """Whether gRPC refused an answer for its size (``RESOURCE_EXHAUSTED``, "larger than max")."""
    cause = exc if isinstance(exc, grpc.aio.AioRpcError) else exc.__cause__
    if isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return True
    return "larger than max" in str(exc)
