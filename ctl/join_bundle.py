"""The join bundle: one file the federation's operator sends a joining instance.

``maoctl federation add-member`` writes it where the federation CA is; ``maoctl instance install``
(joining) reads it. It holds what the newcomer cannot make itself: the federation CA's certificate,
the newcomer's etcd and client certificates and their keys (issued by that CA), and the
``ETCD_INITIAL_CLUSTER`` its etcd starts with. It holds private keys: it is written with mode 0600 and
must travel like a password (scp, an encrypted mail), never through a public channel. It never holds
the CA's key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .cluster import initial_cluster_problem
from .pki import Authority, CertPair, MemberCertificates, member_certificates, write_private

FORMAT = "mao-join-bundle/1"


class BundleError(ValueError):
    """The file is not a usable join bundle; the message says why."""


@dataclass(frozen=True)
class JoinBundle:
    name: str
    peer_url: str
    initial_cluster: str
    ca_cert: str
    etcd_cert: str
    etcd_key: str
    client_cert: str
    client_key: str
    federation: str | None = None

    @property
    def certificates(self) -> MemberCertificates:
        return MemberCertificates(
            self.ca_cert.encode(),
            CertPair(self.etcd_cert.encode(), self.etcd_key.encode()),
            CertPair(self.client_cert.encode(), self.client_key.encode()),
        )


def issue_bundle(
    ca: Authority, name: str, peer_url: str, initial_cluster: str, federation: str | None = None
) -> JoinBundle:
    """The newcomer's certificates for the host of its peer URL, with the cluster it joins."""
    host = urlsplit(peer_url).hostname or ""
    try:
        certs = member_certificates(ca, name, host)
    except ValueError:  # a DNS name rather than an IP address
        certs = member_certificates(ca, name, "127.0.0.1", dns_names=(host,))
    return JoinBundle(
        name=name,
        peer_url=peer_url,
        initial_cluster=initial_cluster,
        ca_cert=certs.ca_cert.decode(),
        etcd_cert=certs.etcd.cert.decode(),
        etcd_key=certs.etcd.key.decode(),
        client_cert=certs.client.cert.decode(),
        client_key=certs.client.key.decode(),
        federation=federation,
    )


def save_bundle(bundle: JoinBundle, path: Path) -> None:
    write_private(path, (json.dumps({"format": FORMAT, **asdict(bundle)}, indent=2) + "\n").encode())


def load_bundle(path: Path) -> JoinBundle:
    try:
        data = json.loads(path.expanduser().read_text())
    except OSError as exc:
        raise BundleError(f"cannot read the join bundle {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise BundleError(f"{path} is not a join bundle (not JSON: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(
            f"{path} is not a join bundle ({FORMAT}); `maoctl federation add-member` writes one"
        )
    data.pop("format")
    try:
        bundle = JoinBundle(**data)
    except TypeError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    texts = {k: v for k, v in asdict(bundle).items() if k != "federation"}
    if not all(isinstance(v, str) and v for v in texts.values()):
        raise BundleError(f"{path}: every field of a join bundle must be a non-empty string")
    for field in ("ca_cert", "etcd_cert", "client_cert", "etcd_key", "client_key"):
        if "-----BEGIN" not in texts[field]:
            raise BundleError(f"{path}: {field} is not PEM")
    if problem := initial_cluster_problem(bundle.initial_cluster, bundle.name, bundle.peer_url):
        raise BundleError(f"{path}: its ETCD_INITIAL_CLUSTER does not fit: {problem}")
    return bundle
