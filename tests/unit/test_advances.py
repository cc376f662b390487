"""The announcement of a merge rides on its lock's release; a lock that ran out first announces only
if no advance was announced since the lock was taken (that one contains this merge: putting this one
after it would move the key back). Every case of release answer x what happened to the key meanwhile,
with stand-ins for etcd and the lock."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import EtcdUnavailable
from orchestrator.federation import keys
from orchestrator.federation.answers import KeyValue
from orchestrator.merging.advances import announce, announced_commit

KEY = keys.ground_truth("d")
OLD, NEW, OTHER = "a" * 40, "b" * 40, "c" * 40


class Etcd:
    """One key, its mod revision moving with each write (0: absent)."""

    def __init__(self, value: dict[str, Any] | None) -> None:
        self.value, self.revision = value, (5 if value is not None else 0)

    def kv(self) -> KeyValue | None:
        return KeyValue(KEY, self.value, self.revision, 1, 0) if self.value is not None else None

    def write(self, value: dict[str, Any]) -> None:
        self.value, self.revision = value, self.revision + 10

    async def put_if(self, key: str, value: Any, mod_revision: int, lease: int | None = None) -> bool:
        if key != KEY or mod_revision != self.revision:
            return False
        self.write(value)
        return True


class Locks:
    def __init__(self, etcd: Etcd, answer: str) -> None:
        self.etcd, self.answer = etcd, answer

    async def release(self, held: object, puts: dict[str, Any]) -> bool:
        if self.answer == "none":
            raise EtcdUnavailable("etcd is unreachable")
        if self.answer == "released":
            for value in puts.values():
                self.etcd.write(value)
            return True
        return False  # "lost": the key was no longer the holder's, nothing written


@given(
    answer=st.sampled_from(["released", "lost", "none"]),
    before=st.sampled_from([None, OLD]),
    meanwhile=st.booleans(),  # another instance announced an advance after the lock ran out
)
def test_an_advance_is_announced_in_order_or_not_at_all(
    answer: str, before: str | None, meanwhile: bool
) -> None:
    etcd = Etcd({"commit": before} if before else None)
    last = etcd.kv()  # as the lock found it
    if meanwhile:
        etcd.write({"commit": OTHER})
    trailers = {"MAO-Run": "r1", "MAO-Instance": "n1"}
    asyncio.run(announce(Locks(etcd, answer), object(), etcd, "d", NEW, trailers, last))  # type: ignore[arg-type]
    written = (etcd.value or {}).get("commit")
    if answer == "released":
        assert written == NEW  # with the release: no later holder can come in between
    elif answer == "lost" and not meanwhile:
        assert written == NEW  # nobody announced since the lock was taken
    elif meanwhile:
        assert written == OTHER  # the later advance stays the last
    else:
        assert written == before  # etcd did not answer: said in the log, nothing more


def test_what_the_log_says_when_an_advance_is_not_announced(caplog: pytest.LogCaptureFixture) -> None:
    etcd = Etcd({"commit": OLD})
    last = etcd.kv()
    etcd.write({"commit": OTHER})
    with caplog.at_level(logging.WARNING):
        asyncio.run(announce(Locks(etcd, "lost"), object(), etcd, "d", NEW, {}, last))  # type: ignore[arg-type]
        asyncio.run(announce(Locks(etcd, "none"), object(), etcd, "d", NEW, {}, last))  # type: ignore[arg-type]
    said = caplog.text
    assert "a later advance, which contains it, was announced first" in said
    assert "could not be announced (data triggers miss it)" in said


@given(value=st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.text())))
def test_only_a_commit_id_counts_as_the_announced_tip(value: Any) -> None:
    assert announced_commit(KeyValue(KEY, value, 1, 1, 0)) is None or (
        isinstance(value, dict) and value.get("commit")
    )
    assert announced_commit(KeyValue(KEY, {"commit": OLD}, 1, 1, 0)) == OLD
    assert announced_commit(None) is None
