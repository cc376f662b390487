"""A registration's seal is verified once per etcd version (``Registry._checked``), and a kept verdict
never says more than a fresh check would: it is only ever the same value's (an etcd restored from a
snapshot hands out revisions again, with other values), and a seal kept as passing stops passing
when the certificate that signed it ends, as it would at a first read."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from ctl import pki
from orchestrator.errors import MalformedEntry
from orchestrator.federation import seals
from orchestrator.federation.answers import KeyValue
from orchestrator.federation.ownership import Kind, owned
from orchestrator.federation.registry import Registry, key_of
from orchestrator.federation.seals import Sealer
from orchestrator.federation.tls import EtcdTls

CA = pki.create_authority("verdicts")


def sealer(name: str) -> tuple[Sealer, datetime.datetime]:
    """An instance's sealer, and when its certificate ends."""
    pair = pki.issue(CA, f"{name} orchestrator", client=True)
    ends = x509.load_pem_x509_certificate(pair.cert).not_valid_after_utc
    return Sealer(name, EtcdTls(CA.cert_pem, pair.cert, pair.key)), ends


(OWNER, OWNER_ENDS), (OTHER, _), (READER, _) = sealer("fed-a"), sealer("fed-b"), sealer("fed-c")


class Etcd:
    """What the registry reads: one value per key, at the revision the test says."""

    def __init__(self) -> None:
        self.held: dict[str, KeyValue] = {}
        self.verified = 0

    def put(self, key: str, value: Any, revision: int) -> None:
        self.held[key] = KeyValue(key, value, revision, revision, 0)

    async def get_many(self, keys: Sequence[str]) -> dict[str, KeyValue | None]:
        return {key: self.held.get(key) for key in keys}


def _registry(etcd: Etcd) -> tuple[Registry, list[int]]:
    """A registry reading as fed-c, counting the signatures it verifies."""
    registry = Registry(etcd, READER, "fed-c")  # type: ignore[arg-type]
    counted = [0]
    check = READER.check

    def counting(record: Any, shared: frozenset[str] = frozenset(), signer: str | None = None) -> Any:
        counted[0] += 1
        return check(record, shared, signer)

    registry.sealer = type("Counting", (), {"check": staticmethod(counting)})()  # type: ignore[assignment]
    return registry, counted


def _tool(by: Sealer, owner: str, image: str) -> dict[str, Any]:
    return owned({"name": "t", "image": image}, Kind.TOOL, owner, 1, by)


def _read(registry: Registry) -> Any:
    async def read() -> Any:
        try:
            entry = await registry.tool_entry("t")
        except MalformedEntry as exc:
            return exc.message
        assert entry is not None
        return entry.value.image, entry.provenance.owner

    return asyncio.run(read())


def test_a_version_is_verified_once() -> None:
    etcd = Etcd()
    etcd.put(key_of(Kind.TOOL, "t"), _tool(OWNER, "fed-a", "busybox:1"), 5)
    registry, verified = _registry(etcd)
    assert _read(registry) == _read(registry) == ("busybox:1", "fed-a")
    assert verified[0] == 1


@settings(max_examples=30, deadline=None)
@given(image=st.from_regex(r"[a-z]{1,12}:[0-9]{1,3}", fullmatch=True), owner_writes_back=st.booleans())
def test_another_value_at_a_version_already_checked_is_checked_itself(
    image: str, owner_writes_back: bool
) -> None:
    """etcd restored from a snapshot: the revision a verified value had now holds another value,
    forged by another member (or written again by the owner: then it passes on its own seal)."""
    etcd = Etcd()
    key = key_of(Kind.TOOL, "t")
    etcd.put(key, _tool(OWNER, "fed-a", "busybox:1"), 5)
    registry, verified = _registry(etcd)
    assert _read(registry) == ("busybox:1", "fed-a")
    if owner_writes_back:
        etcd.put(key, _tool(OWNER, "fed-a", image), 5)
        assert _read(registry) == (image, "fed-a")
    else:
        forged = {**_tool(OTHER, "fed-a", image), "signed_by": "fed-a"}  # fed-b's signature, fed-a's name
        etcd.put(key, forged, 5)
        assert "names 'fed-b orchestrator'" in str(_read(registry))
    assert verified[0] == 2


def test_a_kept_pass_ends_with_the_certificate_that_signed_it(monkeypatch: pytest.MonkeyPatch) -> None:
    etcd = Etcd()
    etcd.put(key_of(Kind.TOOL, "t"), _tool(OWNER, "fed-a", "busybox:1"), 5)
    registry, verified = _registry(etcd)
    assert _read(registry) == ("busybox:1", "fed-a")
    monkeypatch.setattr(seals, "now", lambda: OWNER_ENDS + datetime.timedelta(seconds=1))
    assert "not valid now" in str(_read(registry))
    assert verified[0] == 2
