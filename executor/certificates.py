"""How every MAO certificate is made: an ECDSA P-256 key, a random serial, a validity back-dated a little,
key usages spelled out, PEM out.

Shared by the federation's CA and member certificates (``ctl/pki.py``) and the executor's self-signed
TLS certificate (``executor/tls.py``), so that the two cannot drift apart in key type or validity.
Imports ``cryptography``: the executor imports this module only when it listens on TLS.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Back-dated a little: a peer whose clock is a few minutes behind still accepts a new certificate.
BACKDATE = datetime.timedelta(minutes=10)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int, *, ca: bool = False
) -> x509.CertificateBuilder:
    """A certificate for ``key``'s public half, valid ``days`` from a little before now, a CA's
    (``ca``: it may sign leaves only) or a leaf's; the caller adds its usages and signs."""
    start = datetime.datetime.now(datetime.UTC) - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=0)
            if ca
            else x509.BasicConstraints(ca=False, path_length=None),
            critical=True,
        )
    )


def key_usage(
    *,
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """The key usages a MAO certificate may have; every other one is off."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
