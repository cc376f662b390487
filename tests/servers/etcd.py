"""etcd members and clusters on loopback ports."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from .process import (
    LOCALHOST,
    ManagedProcess,
    ServerStartError,
    _free_ports,
    wait_until,
)

# ---------------------------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------------------------


def _etcd_binary() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if not path:
        raise ServerStartError("etcd binary not found (install Debian package etcd-server)")
    return path


class EtcdServer:
    """One etcd member on loopback; ``initial_cluster`` defaults to just this member.

    With ``tls`` (a folder as ``ctl.pki.save_member`` writes it: ca.crt, etcd.crt/.key, client.crt/.key)
    clients and peers use https and must show a certificate the same CA signed, as in a deployment.
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike[str],
        name: str = "etcd0",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_state: str = "new",
        cluster_token: str = "mao-test-cluster",
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        tls: Path | None = None,
    ) -> None:
        self.name = name
        self.tls = tls
        self.dir = Path(tmpdir) / name
        self.data_dir = self.dir / "data"
        if client_port is None or peer_port is None:
            spare = [p for p in _free_ports(3) if p not in (client_port, peer_port)]
            client_port = client_port or spare.pop(0)
            peer_port = peer_port or spare.pop(0)
        self.host = LOCALHOST
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_state = cluster_state
        self.cluster_token = cluster_token
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.peer_port}"

    def client_env(self) -> dict[str, str]:
        """How an orchestrator reaches this member: its client certificate, or plain HTTP said so."""
        if self.tls is None:
            return {"MAO_ETCD_INSECURE": "1"}
        return {
            "MAO_ETCD_CA": str(self.tls / "ca.crt"),
            "MAO_ETCD_CERT": str(self.tls / "client.crt"),
            "MAO_ETCD_KEY": str(self.tls / "client.key"),
            "MAO_ETCD_INSECURE": "0",
        }

    def ssl_context(self) -> ssl.SSLContext | None:
        """For HTTP requests to this member (``/health``, the v3 JSON gateway) with the client certificate."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls / "ca.crt"))
        context.load_cert_chain(str(self.tls / "client.crt"), str(self.tls / "client.key"))
        return context

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    def command(self) -> list[str]:
        return [
            _etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", self.cluster_token,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self.tls_flags(),
        ]  # fmt: skip

    def tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        ca, cert, key = (str(self.tls / n) for n in ("ca.crt", "etcd.crt", "etcd.key"))
        return [
            "--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key,
            "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
            "--peer-cert-file", cert, "--peer-key-file", key,
        ]  # fmt: skip

    def start(self, wait: bool = True, timeout: float = 30.0) -> EtcdServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for key in list(env):  # a stray ETCD_* in the environment would change the flags
            if key.startswith("ETCD_"):
                del env[key]
        self.process = ManagedProcess(
            self.command(), self.log_path, env=env, cwd=self.dir, name=f"etcd {self.name}"
        )
        if wait:
            self.wait_healthy(timeout)
        return self

    def is_healthy(self) -> bool:
        request = urllib.request.Request(f"{self.client_url}/health")
        try:
            with urllib.request.urlopen(request, timeout=2.0, context=self.ssl_context()) as response:  # noqa: S310
                body = response.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return False
        return '"health":"true"' in body.replace(" ", "")

    def _gateway(self, path: str, body: dict[str, str]) -> dict[str, object]:
        """A call to etcd's JSON gateway (``/v3/...``); uint64 values come back as strings."""
        request = urllib.request.Request(
            f"{self.client_url}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5.0, context=self.ssl_context()) as response:  # noqa: S310
            return json.loads(response.read())

    def member_id(self) -> str:
        header = self._gateway("/v3/maintenance/status", {})["header"]
        assert isinstance(header, dict)
        return str(header["member_id"])

    def leader_id(self) -> str:
        return str(self._gateway("/v3/maintenance/status", {})["leader"])

    def lease_of(self, key: str) -> str | None:
        """The lease ``key`` is bound to (None: no such key, or on no lease)."""
        found = self._gateway("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = found.get("kvs")
        lease = kvs[0].get("lease") if isinstance(kvs, list) and kvs else None
        return str(lease) if lease and lease != "0" else None

    def keep_lease_alive(self, lease: str) -> bool:
        """One keep-alive of ``lease`` (as its holder's heartbeat would send); False: it is gone."""
        answer = self._gateway("/v3/lease/keepalive", {"ID": lease})
        result = answer.get("result")
        return isinstance(result, dict) and int(result.get("TTL", 0)) > 0

    def take_leadership(self, members: list[EtcdServer]) -> None:
        """Make this member the cluster's leader (etcd's move-leader, asked of the current leader)."""
        me = self.member_id()
        leader_id = self.leader_id()
        if leader_id == me:
            return
        leader = next(m for m in members if m.alive and m.member_id() == leader_id)
        leader._gateway("/v3/maintenance/transfer-leadership", {"targetID": me})
        wait_until(lambda: self.leader_id() == me, timeout=30, interval=0.1, what=f"{self.name} to lead")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            if self.process is not None and not self.process.alive:
                raise ServerStartError(
                    f"etcd member {self.name} exited with code {self.process.returncode}"
                    f"{self.process.log_tail_block()}"
                )
            return self.is_healthy()

        try:
            wait_until(healthy, timeout=timeout, interval=0.1, what=f"etcd member {self.name} healthy")
        except ServerStartError:
            raise
        except TimeoutError as exc:
            tail = self.process.log_tail_block() if self.process else ""
            raise ServerStartError(f"{exc} at {self.client_url}/health{tail}") from exc

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def destroy(self) -> None:
        """Kill the member and delete its folder (data dir with a 64 MB WAL, and its log)."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, wait: bool = True, timeout: float = 30.0) -> EtcdServer:
        """Start again on the same ports and data dir (stopping it first if it runs)."""
        if self.process is None:
            return self.start(wait, timeout)
        self.process.restart()
        if wait:
            self.wait_healthy(timeout)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def __repr__(self) -> str:
        return f"<EtcdServer {self.name} {self.endpoint} alive={self.alive}>"


def start_etcd(
    tmpdir: str | os.PathLike[str],
    name: str = "etcd0",
    client_port: int | None = None,
    peer_port: int | None = None,
    initial_cluster: str | None = None,
    cluster_state: str = "new",
    timeout: float = 30.0,
    tls: Path | None = None,
) -> EtcdServer:
    """Start one etcd member and wait until ``/health`` says healthy (``tls``: see ``EtcdServer``)."""
    server = EtcdServer(
        tmpdir,
        name=name,
        client_port=client_port,
        peer_port=peer_port,
        initial_cluster=initial_cluster,
        cluster_state=cluster_state,
        tls=tls,
    )
    return server.start(wait=True, timeout=timeout)


def start_etcd_cluster(
    tmpdir: str | os.PathLike[str],
    n: int = 3,
    name_prefix: str = "etcd",
    timeout: float = 60.0,
) -> list[EtcdServer]:
    """Start ``n`` members on loopback forming one new cluster; wait until all are healthy."""
    ports = _free_ports(2 * n)
    names = [f"{name_prefix}{i}" for i in range(n)]
    initial = ",".join(f"{nm}=http://{LOCALHOST}:{ports[2 * i + 1]}" for i, nm in enumerate(names))
    token = f"mao-test-{secrets.token_hex(4)}"
    members = [
        EtcdServer(
            tmpdir,
            name=nm,
            client_port=ports[2 * i],
            peer_port=ports[2 * i + 1],
            initial_cluster=initial,
            cluster_state="new",
            cluster_token=token,
        )
        for i, nm in enumerate(names)
    ]
    try:
        for member in members:  # all must run before any can elect a leader
            member.start(wait=False)
        for member in members:
            member.wait_healthy(timeout)
    except BaseException:
        for member in members:
            member.kill()
        raise
    return members


def make_member_pki(directory: Path, ca: object, name: str, ip: str = LOCALHOST) -> Path:
    """A member's certificate folder (as ``maoctl instance install`` writes ``pki/``) issued by ``ca``
    (a ``ctl.pki.Authority``); imported lazily so the servers need ``cryptography`` only for TLS."""
    from ctl import pki

    assert isinstance(ca, pki.Authority)
    pki.save_member(pki.member_certificates(ca, name, ip), directory)
    return directory
