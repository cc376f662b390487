"""etcd over TLS with client certificates, as ``maoctl instance install`` deploys it.

A real etcd started with --client-cert-auth and --peer-client-cert-auth (certificates from ``ctl.pki``):
an orchestrator holding the instance's client certificate works end to end; anything without a
certificate the federation CA signed (plain gRPC, TLS without a certificate, another CA's certificate,
an orchestrator configured without one, and a tool on host networking) reads nothing.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aetcd
import aetcd.rpc
import grpc
import pytest

from ctl import pki
from orchestrator.errors import EtcdUnavailable
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.tls import EtcdTls
from tests import gitutil, servers
from tests.api import Api, unique

from .conftest import Node, orchestrator_env

# The v3 JSON gateway's "every key" range: key and range_end both "\0" (base64 "AA==").
ALL_KEYS = json.dumps({"key": "AA==", "range_end": "AA=="})
MAO_PREFIX_B64 = "L21hby92MS"  # base64 of "/mao/v1" (any key of ours starts so)


@pytest.fixture(scope="module")
def authority() -> pki.Authority:
    return pki.create_authority("tls-tests")


@pytest.fixture(scope="module")
def tls_etcd(servers_tmp: Path, authority: pki.Authority) -> Iterator[servers.EtcdServer]:
    # Issued to the orchestrator's instance name, as the installer does: its client certificate is
    # how the other members know what it writes is its own (docs/security.md, "Members").
    certs = servers.make_member_pki(servers_tmp / "tls-pki" / "tls-a", authority, "node-tls")
    server = servers.start_etcd(servers_tmp / "etcd-tls", name="tls-a", tls=certs)
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def tls_node(servers_tmp: Path, tls_etcd: servers.EtcdServer, executor, busybox_image) -> Iterator[Node]:
    env = orchestrator_env(
        "node-tls", servers_tmp / "node-tls", tls_etcd.endpoint, executor, **tls_etcd.client_env()
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-tls")
    yield Node(service, servers_tmp / "node-tls")
    service.stop()


def tls_of(server: servers.EtcdServer) -> EtcdTls:
    assert server.tls is not None
    return EtcdTls.from_files(server.tls / "ca.crt", server.tls / "client.crt", server.tls / "client.key")


def read_all(host: str, port: int, tls: EtcdTls | None) -> list[str]:
    """Every key, through the orchestrator's own client (TLS when ``tls`` is given)."""

    async def go() -> list[str]:
        etcd = Etcd([(host, port)], timeout=3, tls=tls)
        try:
            items = await etcd.list_prefix("/")
            return [kv.key for kv in items]
        finally:
            await etcd.close()

    return asyncio.run(go())


def test_an_orchestrator_with_its_certificate_works_end_to_end(tls_node: Node, tls_etcd) -> None:
    api = tls_node.api
    health = api.ok(api.get("/health"))
    assert health["etcd"] == "ok", health
    tool = unique("tls-tool")
    api.tool(tool)
    assert api.ok(api.get(f"/registry/tools/{tool}"))["image"] == "busybox:latest"
    # It is really in the TLS etcd, next to this instance's member record.
    keys = read_all(tls_etcd.host, tls_etcd.client_port, tls_of(tls_etcd))
    assert f"/mao/v1/tools/{tool}" in keys and "/mao/v1/members/node-tls" in keys
    members = api.ok(api.get("/federation/members"))["etcd"]
    assert members[0]["client_urls"][0].startswith("https://") and members[0]["healthy"] is True


def test_clients_without_a_federation_certificate_are_refused(
    tls_node: Node, tls_etcd: servers.EtcdServer, authority: pki.Authority, tmp_path: Path
) -> None:
    host, port = tls_etcd.host, tls_etcd.client_port
    assert tls_etcd.tls is not None
    ca = (tls_etcd.tls / "ca.crt").read_bytes()

    # Plain gRPC, as the prototype's client (and any etcdctl without --cert) speaks.
    with pytest.raises(EtcdUnavailable):
        read_all(host, port, None)

    # TLS that trusts the CA but shows no certificate of its own.
    async def without_certificate() -> None:
        channel = grpc.aio.secure_channel(
            f"{host}:{port}", grpc.ssl_channel_credentials(root_certificates=ca)
        )
        try:
            stub = aetcd.rpc.KVStub(channel)
            await stub.Range(aetcd.rpc.RangeRequest(key=b"\0", range_end=b"\0"), timeout=5)
        finally:
            await channel.close()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(without_certificate())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    # A certificate from another CA (another federation, or one made up by the caller).
    stranger = pki.create_authority("stranger")
    fake = pki.member_certificates(stranger, "intruder", "127.0.0.1")
    with pytest.raises(EtcdUnavailable):
        read_all(host, port, EtcdTls(ca, fake.client.cert, fake.client.key))

    # The HTTP gateway: no answer without a certificate, the keyspace with one.
    url = f"https://{host}:{port}/v3/kv/range"
    bare = ssl.create_default_context(cafile=str(tls_etcd.tls / "ca.crt"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        post(url, ALL_KEYS, bare)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        post(f"http://{host}:{port}/v3/kv/range", ALL_KEYS, None)
    assert MAO_PREFIX_B64 in post(url, ALL_KEYS, tls_etcd.ssl_context())


def post(url: str, body: str, context: ssl.SSLContext | None) -> str:
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
        return response.read().decode()


def test_an_orchestrator_without_a_certificate_is_refused(
    servers_tmp: Path, tls_etcd: servers.EtcdServer, executor, authority: pki.Authority
) -> None:
    """A node configured for plain HTTP, or with a certificate another CA signed, gets etcd: unreachable."""
    stranger = pki.create_authority("stranger")
    assert tls_etcd.tls is not None
    wrong = servers.make_member_pki(servers_tmp / "tls-pki" / "stranger", stranger, "stranger")
    for name, extra in (
        ("node-no-cert", {"MAO_ETCD_INSECURE": "1"}),
        (
            "node-wrong-ca",
            {
                "MAO_ETCD_CA": str(tls_etcd.tls / "ca.crt"),
                "MAO_ETCD_CERT": str(wrong / "client.crt"),
                "MAO_ETCD_KEY": str(wrong / "client.key"),
                "MAO_ETCD_INSECURE": "0",
            },
        ),
    ):
        env = orchestrator_env(name, servers_tmp / name, tls_etcd.endpoint, executor, **extra)
        service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name=name)
        try:
            api = Api(service.url, service.token)
            health = api.get("/health")
            assert health.status_code == 503 and health.json()["etcd"] != "ok", health.text
            refused = api.post("/registry/tools", {"name": unique("t"), "author": "x", "image": "busybox"})
            assert refused.status_code == 503 and refused.json()["error"].startswith("etcd"), refused.text
        finally:
            service.stop()
    keys = read_all(tls_etcd.host, tls_etcd.client_port, tls_of(tls_etcd))
    assert not any(
        k.startswith(("/mao/v1/members/node-no-cert", "/mao/v1/members/node-wrong-ca")) for k in keys
    )


def test_a_tool_on_host_networking_reads_nothing_from_etcd(
    tls_node: Node, tls_etcd: servers.EtcdServer, etcd: servers.EtcdServer
) -> None:
    """The step probes etcd's client port from inside its container (host networking, no Docker socket)
    over plain HTTP and over https; as a control it reads the session's plain-HTTP etcd the same way."""
    control_key = unique("/mao/v1/probe-control")
    asyncio.run(_put_plain(etcd, control_key))
    api = tls_node.api
    tool, data, pipeline = unique("probe"), unique("probe-out"), unique("probe")
    api.tool(tool)
    repo = api.local_dataset(data)
    urls = {
        "tls-http": f"http://127.0.0.1:{tls_etcd.client_port}/v3/kv/range",
        "tls-https": f"https://127.0.0.1:{tls_etcd.client_port}/v3/kv/range",
        "control": f"http://127.0.0.1:{etcd.client_port}/v3/kv/range",
    }
    script = "".join(
        f"echo '== {label}' >> /usr/src/app/data/probe.txt; "
        f"timeout 20 wget -q -O - --no-check-certificate --header 'Content-Type: application/json' "
        f"--post-data '{ALL_KEYS}' {url} >> /usr/src/app/data/probe.txt 2>&1; "
        f"echo '== {label} exit '$? >> /usr/src/app/data/probe.txt; "
        for label, url in urls.items()
    )
    step = {
        "name": "probe",
        "tool": tool,
        "output_dataset": data,
        "cmd": ["sh", "-c", script + "true"],
        "docker_socket": False,
    }
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    probe = gitutil.show(repo, "ground-truth", "probe.txt")
    sections = dict(_sections(probe))
    # The control proves the probe can read a keyspace when etcd lets it.
    assert MAO_PREFIX_B64 in sections["control"] and "exit 0" in sections["control"], probe
    for label in ("tls-http", "tls-https"):
        assert MAO_PREFIX_B64 not in sections[label] and '"kvs"' not in sections[label], probe
        assert "exit 0" not in sections[label], probe
    # ... while the TLS etcd does hold this federation's keys.
    assert any(
        k.startswith("/mao/v1/") for k in read_all(tls_etcd.host, tls_etcd.client_port, tls_of(tls_etcd))
    )


async def _put_plain(server: servers.EtcdServer, key: str) -> None:
    async with aetcd.Client(server.host, server.client_port, timeout=5) as client:
        await client.put(key.encode(), b'"control"')


def _sections(text: str) -> Iterator[tuple[str, str]]:
    label, lines = None, []
    for line in text.splitlines():
        if line.startswith("== ") and " exit " not in line:
            if label is not None:
                yield label, "\n".join(lines)
            label, lines = line[3:].strip(), []
        else:
            lines.append(line)
    if label is not None:
        yield label, "\n".join(lines)


def test_a_certificate_naming_another_instance_is_said(
    servers_tmp: Path, tls_etcd: servers.EtcdServer, executor, busybox_image
) -> None:
    """The client certificate is the instance's identity toward the other members: one issued to
    another name still reaches etcd, but what this instance writes would not pass as its own, and
    its operator is told at start and in GET /health."""
    env = orchestrator_env(
        "node-misnamed", servers_tmp / "node-misnamed", tls_etcd.endpoint, executor, **tls_etcd.client_env()
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-misnamed")
    try:
        health = Api(service.url, service.token).ok(Api(service.url, service.token).get("/health"))
        assert health["etcd"] == "ok"
        assert any("'node-tls orchestrator'" in w and "node-misnamed" in w for w in health["warnings"]), health
    finally:
        service.stop()
