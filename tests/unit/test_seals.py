"""Seals: a record another member wrote passes only as what its writer's certificate signed."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ctl import pki
from orchestrator.federation.seals import Proof, Seal, Sealer
from orchestrator.federation.tls import EtcdTls

CA = pki.create_authority("seals")
OTHER_CA = pki.create_authority("elsewhere")


def sealer(name: str, ca: pki.Authority = CA, cn: str | None = None) -> Sealer:
    pair = pki.issue(ca, cn or f"{name} orchestrator", client=True)
    return Sealer(name, EtcdTls(CA.cert_pem, pair.cert, pair.key))


A, B = sealer("fed-a"), sealer("fed-b")
SHARED = frozenset({"nodes"})


def through_etcd(record: dict) -> dict:
    """What a reader decodes after the writer's put (compact JSON, keys sorted)."""
    return json.loads(json.dumps(record, separators=(",", ":"), sort_keys=True))


def test_a_seal_verifies_and_names_its_writer() -> None:
    record = A.seal({"name": "t", "image": "busybox:1", "owner": "fed-a"})
    assert B.check(through_etcd(record), signer="fed-a") == Seal("fed-a", Proof.SIGNATURE)
    assert A.problem is None


def test_a_member_cannot_pass_its_record_off_as_anothers() -> None:
    record = A.seal({"name": "t", "image": "busybox:1"})
    forged = {**record, "image": "evil:1"}
    assert "does not verify" in str(B.check(forged))
    claimed = {**B.seal({"name": "t", "image": "evil:1"}), "signed_by": "fed-a"}
    assert "names 'fed-b orchestrator', not 'fed-a'" in str(A.check(claimed))
    assert "not by 'fed-a'" in str(A.check(B.seal({"x": 1}), signer="fed-a"))
    unsigned = {"name": "t", "image": "evil:1", "signed_by": "fed-a"}
    assert "no signature" in str(A.check(unsigned))


def test_only_the_federation_ca_and_client_certificates_count() -> None:
    stranger = sealer("fed-a", ca=OTHER_CA)
    assert "not issued by the federation CA" in str(A.check(stranger.seal({"x": 1})))
    etcd_cert = sealer("fed-a", cn="fed-a etcd")
    assert "names 'fed-a etcd'" in str(A.check(etcd_cert.seal({"x": 1})))
    assert etcd_cert.problem is not None  # said at start: the others will refuse what it writes


def test_shared_fields_may_change_without_breaking_the_seal() -> None:
    record = A.seal({"name": "d", "master": "/srv/d.git", "nodes": ["s-fed-a"]}, SHARED)
    record["nodes"].append("s-fed-b")
    assert isinstance(B.check(through_etcd(record), SHARED), Seal)
    assert isinstance(B.check(through_etcd(record)), str)  # not shared: then it is a forgery


def test_without_tls_a_seal_is_a_claim() -> None:
    plain = Sealer("fed-a", None)
    record = plain.seal({"x": 1})
    assert record == {"x": 1, "signed_by": "fed-a"}
    assert plain.check(record) == Seal("fed-a", Proof.CLAIM)
    assert isinstance(plain.check({"x": 1}), str)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), JSON, max_size=6), JSON)
def test_any_record_survives_etcd_and_any_tampering_is_caught(record: dict, other: object) -> None:
    sealed = A.seal(record)
    assert isinstance(B.check(through_etcd(sealed)), Seal)
    key = next((k for k in record if k not in ("signed_by", "certificate", "signature")), None)
    if key is not None and through_etcd({"v": record[key]}) != through_etcd({"v": other}):
        assert isinstance(B.check(through_etcd({**sealed, key: other})), str)


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_checking_never_raises(value: object) -> None:
    for fields in (value, {"signed_by": "fed-a", "certificate": value, "signature": value}):
        assert isinstance(A.check(fields), Seal | str)
