"""Who wrote a record into etcd, proven by the writer's federation certificate.

etcd does not say who wrote a key, and every member's certificate may write every key (etcd's own
users and roles are not used: docs/security.md). So what one instance writes for others to act on
(registrations, federation schedules and triggers, member records, audits and their answers) carries
a *seal*: ``signed_by`` (the writer's instance name), and over TLS also ``certificate`` (the writer's
etcd client certificate, DER in base64) and ``signature`` (ECDSA P-256 with SHA-256, base64, made with
that certificate's key) over the record's canonical JSON: every field except the seal's own two and
those the caller names as shared (fields other instances may change, such as a dataset's ``nodes``).

A reader accepts a seal when the certificate was issued by the federation CA (``MAO_ETCD_CA``), is
valid now, is a client certificate, names ``signed_by`` (``ctl.pki`` issues an instance's client
certificate with the common name ``<instance> orchestrator``) and the signature verifies. A member
holding its own certificate can still write anything into etcd, but never a record that passes as
another member's.

Without TLS (``MAO_ETCD_INSECURE=1``) there is no certificate: the seal is ``signed_by`` alone, a
*claim* that anyone reaching etcd could write (``Proof.CLAIM``). Readers still check the record's
shape and that the claim names the writer the record says it comes from; what remains unproven is
said where it matters (``GET /registry/{kind}/{name}/owner`` answers ``proof: "claim"``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from executor.wire.names import name_problem

from .tls import EtcdTls

log = logging.getLogger(__name__)

SEAL_FIELDS = frozenset({"certificate", "signature"})
CERTIFICATE_SUFFIX = " orchestrator"  # ctl.pki: an instance's client certificate is "<name> orchestrator"
MAX_CERTIFICATE_CHARS = 8192
MAX_SIGNATURE_CHARS = 256
_CACHE = 256


class Proof(StrEnum):
    SIGNATURE = "signature"  # verified against the federation CA
    CLAIM = "claim"  # etcd without TLS: a name, not a proof


@dataclass(frozen=True)
class Seal:
    """A record's checked seal: who wrote it, and how that is known; ``valid_until``: when the
    certificate that signed it ends (None for a claim), after which the same record no longer passes."""

    signed_by: str
    proof: Proof
    valid_until: datetime.datetime | None = field(default=None, compare=False)


def now() -> datetime.datetime:
    """The time certificates are checked at (one place, so that tests can move it)."""
    return datetime.datetime.now(datetime.UTC)


def canonical(record: Mapping[str, Any], shared: frozenset[str] = frozenset()) -> bytes:
    """The bytes a seal signs: the record without its seal and its shared fields, as compact JSON
    with sorted keys (what a reader decodes from etcd and encodes again gives the same bytes)."""
    body = {k: v for k, v in record.items() if k not in SEAL_FIELDS and k not in shared}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Sealer:
    """Seals what this instance writes (with its etcd client key) and checks the seals of what it
    reads (against the federation CA). Without TLS it writes and accepts claims."""

    def __init__(self, instance: str, tls: EtcdTls | None) -> None:
        self.instance = instance
        self._ca: x509.Certificate | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._certificate = ""
        self._checked: OrderedDict[str, x509.Certificate | str] = OrderedDict()
        self.problem: str | None = None  # why others will not accept this instance's seals
        if tls is None:
            return
        self._ca = x509.load_pem_x509_certificate(tls.ca)
        own = x509.load_pem_x509_certificate(tls.cert)
        key = serialization.load_pem_private_key(tls.key, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            self.problem = "MAO_ETCD_KEY is not an EC key: this instance cannot seal what it writes"
            return
        self._key = key
        self._certificate = base64.b64encode(own.public_bytes(serialization.Encoding.DER)).decode()
        checked = self._certificate_of(self._certificate, instance)
        if isinstance(checked, str):
            self.problem = (
                f"this instance's etcd client certificate ({_common_name(own)!r}) will not be accepted "
                f"as {instance!r} by the other members: {checked}"
            )

    @property
    def proof(self) -> Proof:
        return Proof.SIGNATURE if self._ca is not None else Proof.CLAIM

    def seal(self, record: Mapping[str, Any], shared: frozenset[str] = frozenset()) -> dict[str, Any]:
        """``record`` with this instance's seal (any seal it carried is replaced)."""
        sealed = {k: v for k, v in record.items() if k not in SEAL_FIELDS}
        sealed["signed_by"] = self.instance
        if self._key is None:
            return sealed
        signature = self._key.sign(canonical(sealed, shared), ec.ECDSA(hashes.SHA256()))
        return {
            **sealed,
            "certificate": self._certificate,
            "signature": base64.b64encode(signature).decode(),
        }

    def check(
        self, record: Any, shared: frozenset[str] = frozenset(), signer: str | None = None
    ) -> Seal | str:
        """The record's seal, or why it is not acceptable (a sentence). ``signer``: the instance the
        record must come from (e.g. the one its key or its ``created_by`` names)."""
        if not isinstance(record, Mapping):
            return "it is not a JSON object"
        signed_by = record.get("signed_by")
        if not isinstance(signed_by, str) or name_problem(signed_by, "signer") is not None:
            return "it carries no seal (signed_by: the instance that wrote it)"
        if signer is not None and signed_by != signer:
            return f"it was sealed by {signed_by!r}, not by {signer!r}"
        if self._ca is None:
            return Seal(signed_by, Proof.CLAIM)
        certificate, signature = record.get("certificate"), record.get("signature")
        if not isinstance(certificate, str) or not isinstance(signature, str):
            return f"it carries no signature of {signed_by!r} (written past the API of its instance)"
        if len(certificate) > MAX_CERTIFICATE_CHARS or len(signature) > MAX_SIGNATURE_CHARS:
            return "its seal is too large to be one"
        cert = self._certificate_of(certificate, signed_by)
        if isinstance(cert, str):
            return cert
        try:
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "its certificate does not hold an EC key"
            key.verify(
                base64.b64decode(signature, validate=True),
                canonical(record, shared),
                ec.ECDSA(hashes.SHA256()),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            return f"its signature does not verify: it is not what {signed_by!r} sealed"
        return Seal(signed_by, Proof.SIGNATURE, cert.not_valid_after_utc)

    def _certificate_of(self, encoded: str, signed_by: str) -> x509.Certificate | str:
        """The certificate, if the federation CA issued it to ``signed_by`` and it is valid now."""
        cached = self._checked.get(encoded)
        if cached is None:
            cached = self._parse(encoded)
            self._checked[encoded] = cached
            if len(self._checked) > _CACHE:
                self._checked.popitem(last=False)
        if isinstance(cached, str):
            return cached
        if _common_name(cached) != f"{signed_by}{CERTIFICATE_SUFFIX}":
            return f"its certificate names {_common_name(cached)!r}, not {signed_by!r}"
        if not cached.not_valid_before_utc <= now() <= cached.not_valid_after_utc:
            return "its certificate is not valid now (expired, or not yet valid)"
        return cached

    def _parse(self, encoded: str) -> x509.Certificate | str:
        assert self._ca is not None
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            return "its certificate cannot be read"
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            return "its certificate was not issued by the federation CA"
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return "its certificate is not a client certificate"
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            return "its certificate is not a client certificate"
        return cert


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode(errors="replace")
