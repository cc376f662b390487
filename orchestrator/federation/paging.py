"""Range reads in pages: a prefix of any size listed without one answer having to hold it all.

Range answers are read in pages of at most ``PAGE_KEYS`` keys, sized from the values seen so far so
that a page carries about ``PAGE_BYTES``; a page etcd cannot send in one gRPC message (4 MiB by
default) is asked for again in smaller pieces, down to one key, and a single value too large for any
answer is named in the log and passed over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aetcd.utils

from ..errors import EtcdUnavailable
from .answers import KeyValue, decode_kv
from .values import decode_key, warn_once

PAGE_BYTES = 1024 * 1024
PAGE_KEYS = 512
FIRST_PAGE = 64
# What a range read answers instead of etcd's reply when the reply does not fit one gRPC message, or
# when the revision it was asked at has been compacted away.
TOO_LARGE = object()
COMPACTED = object()


# One Range call, ``Etcd._range(key, range_end, *, limit, revision, descend, keys_only)``: etcd's
# reply, ``TOO_LARGE`` or ``COMPACTED``.
RangeReader = Callable[..., Awaitable[Any]]


class SnapshotCompacted(Exception):
    """The revision a paged listing is read at was compacted between two pages."""


class Pages:
    """An async iterator over the decodable keys of a range, read in pages (see ``PAGE_BYTES``);
    ``revision`` is the store revision of the first page. With ``snapshot`` every page is read at
    that revision (``SnapshotCompacted`` when etcd compacted it meanwhile)."""

    def __init__(
        self,
        read: RangeReader,
        prefix: str,
        *,
        start: str | None = None,
        limit: int = 0,
        newest_first: bool = False,
        before: str | None = None,
        snapshot: bool = False,
    ) -> None:
        self.read = read
        self.prefix = prefix
        self.low = (start or prefix).encode()
        self.high = before.encode() if before else aetcd.utils.prefix_range_end(prefix.encode())
        self.limit = limit
        self.descend = newest_first
        self.snapshot = snapshot
        self.revision = 0

    def __aiter__(self) -> AsyncIterator[KeyValue]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KeyValue]:
        page, given = FIRST_PAGE, 0
        while True:
            want = min(page, self.limit - given) if self.limit else page
            response = await self.read(
                self.low,
                self.high,
                limit=want,
                revision=self.revision if self.snapshot else 0,
                descend=self.descend,
            )
            if response is COMPACTED:
                raise SnapshotCompacted
            if response is TOO_LARGE:
                if want > 1:
                    page = max(1, want // 4)
                    continue
                await self._skip_one()
                continue
            if not self.revision:
                self.revision = int(response.header.revision)
            kvs = list(response.kvs)
            size = 0
            for raw in kvs:
                size += len(raw.key) + len(raw.value)
                kv = decode_kv(raw)
                if kv is None:
                    continue
                if kv.problem:
                    warn_once(kv.key, kv.mod_revision, kv.problem)
                    continue
                yield kv
                given += 1
                if self.limit and given >= self.limit:
                    return
            if not kvs or not response.more:
                return
            self._past(bytes(kvs[-1].key))
            page = max(1, min(PAGE_KEYS, PAGE_BYTES * len(kvs) // max(size, 1)))

    def _past(self, key: bytes) -> None:
        if self.descend:
            self.high = key  # the range's end is exclusive
        else:
            self.low = key + b"\0"

    async def _skip_one(self) -> None:
        """One value is larger than a gRPC answer may be: name it, and go on past it."""
        response = await self.read(
            self.low,
            self.high,
            limit=1,
            revision=self.revision if self.snapshot else 0,
            descend=self.descend,
            keys_only=True,
        )
        if response is COMPACTED:
            raise SnapshotCompacted
        if response is TOO_LARGE or not response.kvs:  # cannot happen for a key alone; stop
            raise EtcdUnavailable(f"etcd could not send the keys under {self.prefix} in any page size")
        self.revision = self.revision or int(response.header.revision)
        raw = response.kvs[0]
        shown = decode_key(raw.key) or repr(bytes(raw.key))[:300]
        warn_once(shown, raw.mod_revision, "larger than one etcd answer may be")
        self._past(bytes(raw.key))
