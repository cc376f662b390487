"""The federation's certificates: one CA, and per instance an etcd certificate and a client certificate.

Who holds what:
- the federation CA (``ca.crt`` + ``ca.key``) is made once, by the install that founds the federation,
  in ``<install dir>/ca/``; its key is never mounted into a container and never leaves that folder
  (``maoctl federation add-member`` runs where it is, to issue a newcomer's certificates);
- each instance has ``<install dir>/pki/``: ``ca.crt``, ``etcd.crt``/``etcd.key`` (its etcd member's
  certificate, used both as server and as peer, so it is valid for TLS servers and clients) and
  ``client.crt``/``client.key`` (the orchestrator's client certificate).

etcd runs with ``--client-cert-auth`` and ``--peer-client-cert-auth``: it accepts only clients and peers
whose certificate this CA signed. Keys are ECDSA P-256; key files are written with mode 0600.

This module needs only ``cryptography`` (maoctl stays light; the daemon never imports it).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from executor.certificates import builder, key_pem, key_usage, new_key, subject
from executor.private_folder import make_private

CA_DAYS = 3650
LEAF_DAYS = 1825
# Names every member's certificate carries besides its own IP: the orchestrator reaches its own member
# on loopback, and tests and the one-machine compose file use these.
LOOPBACK_IPS = ("127.0.0.1", "::1")
LOOPBACK_NAMES = ("localhost",)

CA_CERT, CA_KEY = "ca.crt", "ca.key"
ETCD_CERT, ETCD_KEY = "etcd.crt", "etcd.key"
CLIENT_CERT, CLIENT_KEY = "client.crt", "client.key"


class PkiError(Exception):
    """A CA or certificate file is missing or unreadable; the message says which and what to do."""


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class MemberCertificates:
    """What one instance needs: the CA certificate, its etcd member's pair and its client pair."""

    ca_cert: bytes
    etcd: CertPair
    client: CertPair


def create_authority(federation: str) -> Authority:
    """A new self-signed CA for ``federation`` (only certificate signing; no TLS use of its own)."""
    key = new_key()
    name = subject(f"MAO federation {federation} CA")
    cert = (
        builder(name, name, key, CA_DAYS, ca=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue(
    ca: Authority,
    common_name: str,
    *,
    ips: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    server: bool = False,
    client: bool = True,
) -> CertPair:
    """A certificate signed by ``ca``; ``server`` adds serverAuth (and needs names), ``client`` clientAuth."""
    if not (server or client):
        raise ValueError("a certificate must be good for a server, a client or both")
    key = new_key()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    san: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    san += [x509.DNSName(name) for name in dict.fromkeys(dns_names)]
    signed = (
        builder(subject(common_name), ca.cert.subject, key, LEAF_DAYS)
        .add_extension(key_usage(digital_signature=True, key_agreement=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if san:
        signed = signed.add_extension(x509.SubjectAlternativeName(san), critical=False)
    elif server:
        raise ValueError("a server certificate needs at least one IP address or DNS name")
    cert = signed.sign(ca.key, hashes.SHA256())
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def member_certificates(
    ca: Authority, name: str, ip: str, dns_names: tuple[str, ...] = ()
) -> MemberCertificates:
    """An instance's etcd certificate (server and peer: reachable on ``ip``, loopback and ``name``) and
    its orchestrator's client certificate."""
    etcd = issue(
        ca,
        f"{name} etcd",
        ips=(ip, *LOOPBACK_IPS),
        dns_names=(*dns_names, *_dns_name(name), *LOOPBACK_NAMES),
        server=True,
        client=True,
    )
    client = issue(ca, f"{name} orchestrator", client=True)
    return MemberCertificates(ca.cert_pem, etcd, client)


def _dns_name(name: str) -> tuple[str, ...]:
    # Instance names allow '_', which DNS names do not; such a name is simply not a SAN.
    return (name,) if all(part and part.replace("-", "").isalnum() for part in name.split(".")) else ()


# -- files -------------------------------------------------------------------------------------------
def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only, never briefly readable by others."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing temp file keeps its mode otherwise
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def save_authority(ca: Authority, directory: Path) -> list[Path]:
    make_private(directory)
    write_public(directory / CA_CERT, ca.cert_pem)
    write_private(directory / CA_KEY, key_pem(ca.key))
    return [directory / CA_CERT, directory / CA_KEY]


def load_authority(directory: Path) -> Authority:
    """The CA kept in ``directory`` (``ca.crt``, ``ca.key``); PkiError if it is not there."""
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PkiError(
            f"no federation CA in {directory} ({exc}): certificates are issued where the federation's "
            "founding install keeps its CA (<install dir>/ca)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{directory / CA_KEY} is not an EC private key")
    return Authority(cert, key)


def save_member(certs: MemberCertificates, directory: Path) -> list[Path]:
    """Write an instance's certificates into ``directory`` (created 0700; keys 0600)."""
    make_private(directory)
    write_public(directory / CA_CERT, certs.ca_cert)
    write_public(directory / ETCD_CERT, certs.etcd.cert)
    write_private(directory / ETCD_KEY, certs.etcd.key)
    write_public(directory / CLIENT_CERT, certs.client.cert)
    write_private(directory / CLIENT_KEY, certs.client.key)
    return [directory / n for n in (CA_CERT, ETCD_CERT, ETCD_KEY, CLIENT_CERT, CLIENT_KEY)]


def certificate_names(pem: bytes) -> tuple[list[str], list[str]]:
    """The IP addresses and DNS names a certificate is valid for (for checks and messages)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)], san.get_values_for_type(x509.DNSName)


def found_federation(directory: Path, name: str, ip: str, federation: str | None = None) -> list[Path]:
    """A founding install: the federation CA in ``directory/ca`` (an existing one is kept, so running
    the installer again does not cut the instance off its federation) and this instance's
    certificates, newly issued by it, in ``directory/pki``. Returns the files written."""
    ca_dir = directory / "ca"
    if (ca_dir / CA_KEY).exists():
        ca, written = load_authority(ca_dir), []
    else:
        ca = create_authority(federation or name)
        written = save_authority(ca, ca_dir)
    return written + save_member(member_certificates(ca, name, ip), directory / "pki")


def main(argv: list[str]) -> int:
    """``python -m ctl.pki DIR NAME IP``: the CA and one instance's certificates, as the installer does."""
    if len(argv) != 4:
        sys.stderr.write("usage: python -m ctl.pki DIR INSTANCE-NAME IP  (writes DIR/ca and DIR/pki)\n")
        return 2
    for path in found_federation(Path(argv[1]), argv[2], argv[3]):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
