"""The executor's own TLS certificate, for an orchestrator on another host (``MAO_EXECUTOR_LISTEN=tls``).

Nobody needs to sign it: the orchestrator pins it (``MAO_EXECUTOR_TLS_FINGERPRINT``, the SHA-256
``mao-executor --fingerprint`` prints, or the certificate file itself, ``MAO_EXECUTOR_TLS_CERT`` on the
orchestrator's side), so a listener with any other certificate is refused before a byte of a request
is sent. Generated once into the executor's private folder (key 0600) and reused, so the pin holds
across restarts.
"""

from __future__ import annotations

import datetime
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
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mao-executor {instance}")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


__all__ = ["ensure_certificate", "fingerprint_of", "server_context"]
