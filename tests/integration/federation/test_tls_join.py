"""The two-member join over TLS, as an operator does it with the installer's files.

Member A founds the federation (CA in its ca/, certificates in its pki/, as ``maoctl instance install``
writes them) and runs etcd with client and peer certificate authentication and an orchestrator. A peer
with a certificate from another CA cannot join in B's place. B is added to etcd, gets a join bundle issued by A's CA, starts its etcd from the bundle's certificates and
ETCD_INITIAL_CLUSTER, and its orchestrator sees what A registered.

Adding the second member of a one-member cluster goes through etcd's own member API here (with A's
client certificate): the orchestrator's quorum policy for that case (``POST /federation/etcd-members``
answers 409 on a one-member federation) is changed on another branch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ctl import pki
from ctl.join_bundle import issue_bundle, load_bundle, save_bundle
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.tls import EtcdTls
from tests import servers
from tests.api import Api, unique
from tests.servers.process import _free_ports

from ..conftest import orchestrator_env


def tls_env(pki_dir: Path) -> dict[str, str]:
    return {
        "MAO_ETCD_CA": str(pki_dir / pki.CA_CERT),
        "MAO_ETCD_CERT": str(pki_dir / pki.CLIENT_CERT),
        "MAO_ETCD_KEY": str(pki_dir / pki.CLIENT_KEY),
        "MAO_ETCD_INSECURE": "0",
    }


def add_member(etcd: servers.EtcdServer, pki_dir: Path, peer_url: str) -> None:
    async def go() -> None:
        tls = EtcdTls.from_files(pki_dir / pki.CA_CERT, pki_dir / pki.CLIENT_CERT, pki_dir / pki.CLIENT_KEY)
        client = Etcd([(etcd.host, etcd.client_port)], timeout=5, tls=tls)
        try:
            await client.add_member(peer_url)
        finally:
            await client.close()

    asyncio.run(go())


def test_second_member_joins_over_tls_with_the_join_bundle(
    servers_tmp: Path, executor, busybox_image
) -> None:
    root = servers_tmp / "tls-join"
    # A: a founding install's ca/ and pki/.
    pki.found_federation(root / "a", "join-a", servers.LOCALHOST, federation="tls-join")
    a_etcd = servers.start_etcd(root, name="join-a", tls=root / "a" / "pki")
    started: list[servers.ServiceProcess] = []
    b_etcd: servers.EtcdServer | None = None
    try:
        a_env = orchestrator_env(
            "join-a", root / "a" / "data", a_etcd.endpoint, executor, **tls_env(root / "a" / "pki")
        )
        a = servers.start_orchestrator(a_env, log_dir=servers_tmp / "logs", name="join-a")
        started.append(a)
        a_api = Api(a.url, a.token)
        tool = unique("joined-tool")
        a_api.tool(tool)

        # The operator of A adds B and issues its bundle where the CA is.
        client_port, peer_port = _free_ports(2)  # distinct
        b_peer = f"https://{servers.LOCALHOST}:{peer_port}"
        add_member(a_etcd, root / "a" / "pki", b_peer)
        initial = f"join-a={a_etcd.peer_url},join-b={b_peer}"
        bundle_path = root / "join-b-join.json"
        save_bundle(
            issue_bundle(pki.load_authority(root / "a" / "ca"), "join-b", b_peer, initial, "tls-join"),
            bundle_path,
        )

        # A peer without a certificate from the federation's CA cannot take B's place, even knowing
        # the CA's (public) certificate: A's etcd refuses its TLS handshake, so it never joins.
        intruder_pki = servers.make_member_pki(
            root / "intruder" / "pki", pki.create_authority("stranger"), "join-b"
        )
        (intruder_pki / pki.CA_CERT).write_bytes((root / "a" / "pki" / pki.CA_CERT).read_bytes())
        intruder = servers.EtcdServer(
            root / "intruder",
            name="join-b",
            client_port=client_port,
            peer_port=peer_port,
            initial_cluster=initial,
            cluster_state="existing",
            tls=intruder_pki,
        )
        intruder.start(wait=False)
        try:
            assert intruder.process is not None
            code = intruder.process.wait(timeout=60)  # etcd gives up: it cannot fetch the cluster from A
            log = intruder.log_path.read_text()
            assert code != 0 and "cannot fetch cluster info" in log, log[-3000:]
            # ... because A's etcd refused the handshake (TLS 1.3 may show the intruder only a reset).
            servers.wait_until(
                lambda: any(
                    "rejected connection" in line and "unknown authority" in line
                    for line in a_etcd.log_path.read_text().splitlines()
                ),
                timeout=30,
                interval=0.2,
                what="A's etcd logs the refused peer",
            )
        finally:
            intruder.destroy()

        # B's operator: the installer writes the bundle's certificates into B's pki/ (keys 0600).
        bundle = load_bundle(bundle_path)
        pki.save_member(bundle.certificates, root / "b" / "pki")
        assert not (root / "b" / "ca").exists()
        b_etcd = servers.EtcdServer(
            root,
            name="join-b",
            client_port=client_port,
            peer_port=peer_port,
            initial_cluster=bundle.initial_cluster,
            cluster_state="existing",
            tls=root / "b" / "pki",
        )
        b_etcd.start(wait=True, timeout=60)

        endpoints = f"{b_etcd.endpoint},{a_etcd.endpoint}"
        b_env = orchestrator_env(
            "join-b", root / "b" / "data", endpoints, executor, **tls_env(root / "b" / "pki")
        )
        b = servers.start_orchestrator(b_env, log_dir=servers_tmp / "logs", name="join-b")
        started.append(b)
        b_api = Api(b.url, b.token)

        # B reads what A registered, and both see two live instances and two healthy etcd members.
        assert b_api.ok(b_api.get(f"/registry/tools/{tool}"))["name"] == tool
        for api in (a_api, b_api):
            members = api.ok(api.get("/federation/members"))
            assert {"join-a", "join-b"} <= {i["name"] for i in members["instances"]}
            etcd_members = {m["name"]: m for m in members["etcd"]}
            assert set(etcd_members) == {"join-a", "join-b"}
            assert all(
                m["healthy"] and m["peer_urls"][0].startswith("https://") for m in etcd_members.values()
            )
        # B's registration reaches A through the cluster as well.
        other = unique("from-b")
        b_api.tool(other)
        assert a_api.ok(a_api.get(f"/registry/tools/{other}"))["name"] == other
    finally:
        for service in started:
            service.stop()
        if b_etcd is not None:
            b_etcd.destroy()
        a_etcd.destroy()
