"""The executor's own TLS certificate, for an orchestrator on another host (``MAO_EXECUTOR_LISTEN=tls``).

Nobody needs to sign it: the orchestrator pins it (``MAO_EXECUTOR_TLS_FINGERPRINT``, the SHA-256
``mao-executor --fingerprint`` prints, or the certificate file itself, ``MAO_EXECUTOR_TLS_CERT`` on the
orchestrator's side), so a listener with any other certificate is refused before a byte of a request
is sent. Generated once into the executor's private folder (key 0600) and reused, so the pin holds
across restarts.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path

from executor.transport import certificate_fingerprint

CERT_FILE, KEY_FILE = "tls.crt", "tls.key"
DAYS = 3650


def ensure_certificate(folder: Path, instance: str, host: str) -> tuple[Path, Path]:
    """``folder``'s certificate and key, generated (ECDSA P-256, self-signed) when absent."""
    cert, key = folder / CERT_FILE, folder / KEY_FILE
    if cert.is_file() and key.is_file():
        return cert, key
    cert_pem, key_pem = _self_signed(instance, host)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(key, key_pem, 0o600)
    _write(cert, cert_pem, 0o644)
    return cert, key


def fingerprint_of(cert: Path) -> bytes:
    return certificate_fingerprint(cert.read_bytes())


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _self_signed(instance: str, host: str) -> tuple[bytes, bytes]:
    # Imported here: only an executor that listens on TLS needs cryptography.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from executor.certificates import builder, key_pem, new_key, subject

    key = new_key()
    name = subject(f"mao-executor {instance}")
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        builder(name, name, key, DAYS)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


__all__ = ["ensure_certificate", "fingerprint_of", "server_context"]
