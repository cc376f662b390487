"""The federation PKI: a CA, member certificates that chain to it with the right names and uses."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ctl import pki


@pytest.fixture(scope="module")
def ca() -> pki.Authority:
    return pki.create_authority("testfed")


def verify(ca: pki.Authority, pem: bytes) -> x509.Certificate:
    cert = x509.load_pem_x509_certificate(pem)
    cert.verify_directly_issued_by(ca.cert)  # raises if the signature or issuer do not match
    return cert


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_the_ca_is_a_ca(ca: pki.Authority) -> None:
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    assert "testfed" in ca.cert.subject.rfc4514_string()


def test_member_certificates_chain_to_the_ca_with_the_right_names(ca: pki.Authority) -> None:
    certs = pki.member_certificates(ca, "node-b", "10.0.0.5")
    etcd = verify(ca, certs.etcd.cert)
    ips, names = pki.certificate_names(certs.etcd.cert)
    assert {"10.0.0.5", "127.0.0.1", "::1"} <= set(ips)
    assert {"node-b", "localhost"} <= set(names)
    # A member's certificate serves clients and is also the client side of peer connections.
    assert usages(etcd) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = verify(ca, certs.client.cert)
    assert usages(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert certs.ca_cert == ca.cert_pem


def test_another_ca_does_not_verify(ca: pki.Authority) -> None:
    other = pki.create_authority("other")
    certs = pki.member_certificates(other, "node-x", "10.0.0.9")
    with pytest.raises((ValueError, TypeError, Exception)):
        verify(ca, certs.etcd.cert)


def test_names_that_are_not_dns_names_are_left_out(ca: pki.Authority) -> None:
    certs = pki.member_certificates(ca, "node_b", "fd00::5")
    ips, names = pki.certificate_names(certs.etcd.cert)
    assert str(ipaddress.ip_address("fd00::5")) in ips and "node_b" not in names


def test_files_keys_private_and_authority_round_trip(tmp_path: Path, ca: pki.Authority) -> None:
    written = pki.save_authority(ca, tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "ca" / pki.CA_KEY).stat().st_mode) == 0o600
    loaded = pki.load_authority(tmp_path / "ca")
    assert loaded.cert == ca.cert and len(written) == 2
    files = pki.save_member(pki.member_certificates(loaded, "n1", "10.0.0.1"), tmp_path / "pki")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes[pki.ETCD_KEY] == modes[pki.CLIENT_KEY] == 0o600
    assert modes[pki.CA_CERT] == modes[pki.ETCD_CERT] == 0o644


def test_openssl_verifies_the_chain(tmp_path: Path, ca: pki.Authority) -> None:
    pki.save_authority(ca, tmp_path / "ca")
    pki.save_member(pki.member_certificates(ca, "n1", "10.0.0.1"), tmp_path / "pki")
    for name, purpose in (
        (pki.ETCD_CERT, "sslserver"),
        (pki.ETCD_CERT, "sslclient"),
        (pki.CLIENT_CERT, "sslclient"),
    ):
        done = subprocess.run(
            ["openssl", "verify", "-purpose", purpose, "-CAfile", str(tmp_path / "ca" / pki.CA_CERT),
             str(tmp_path / "pki" / name)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_missing_authority_says_where_it_is_looked_for(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="no federation CA"):
        pki.load_authority(tmp_path)
