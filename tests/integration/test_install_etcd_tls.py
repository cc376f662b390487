"""What ``maoctl instance install`` writes for etcd works with a real etcd binary.

No image registry is reachable here, so the compose file's etcd service is run as the local etcd
binary with exactly its ``ETCD_*`` environment (only the container paths and the fixed ports are
mapped to this test's folder and free ports). The orchestrator's settings from the same compose file
reach it; a client without the certificate does not.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.request
from pathlib import Path

import pytest
import yaml

from ctl.env_files import parse_env
from ctl.instance_config import PKI_MOUNT
from orchestrator.config import load_settings
from orchestrator.errors import EtcdUnavailable
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.tls import EtcdTls
from tests import servers
from tests.ctl_helpers import maoctl
from tests.servers.process import _free_ports


def test_the_installed_etcd_runs_with_client_and_peer_tls(tmp_path: Path) -> None:
    directory = tmp_path / "solo"
    done = maoctl(
        "http://127.0.0.1:9",
        "instance", "install", "--non-interactive", "--dir", str(directory), "--name", "solo", "--ip", "127.0.0.1",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    compose = yaml.safe_load((directory / "docker-compose.yaml").read_text())
    client_port, peer_port = _free_ports(2)

    def local(value: str) -> str:
        return (
            value.replace(PKI_MOUNT, str(directory / "pki"))
            .replace("/etcd-data", str(directory / "etcd"))
            .replace(":2379", f":{client_port}")
            .replace(":2380", f":{peer_port}")
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "MAO_"))}
    env.update({k: local(v) for k, v in compose["services"]["etcd"]["environment"].items()})
    etcd_binary = servers.EtcdServer(tmp_path).command()[0]
    process = servers.ManagedProcess([etcd_binary], tmp_path / "etcd.log", env=env, name="installed etcd")
    try:
        context = ssl.create_default_context(cafile=str(directory / "pki" / "ca.crt"))
        context.load_cert_chain(str(directory / "pki" / "client.crt"), str(directory / "pki" / "client.key"))

        def healthy() -> bool:
            assert process.alive, process.log_tail_block()
            try:
                with urllib.request.urlopen(  # noqa: S310
                    f"https://127.0.0.1:{client_port}/health", timeout=2, context=context
                ) as response:
                    return b"true" in response.read()
            except OSError:
                return False

        servers.wait_until(healthy, timeout=30, interval=0.2, what="the installed etcd healthy")

        # The orchestrator's view: mao.env under the compose file's environment, paths as the host sees them.
        orchestrator_env = {
            **parse_env((directory / "mao.env").read_text()),
            **{k: local(v) for k, v in compose["services"]["orchestrator"]["environment"].items()},
            "MAO_DATA_DIR": str(tmp_path / "data"),
            "MAO_HOST_DATA_DIR": str(tmp_path / "data"),
        }
        settings = load_settings(orchestrator_env)
        assert settings.etcd_endpoints == (("127.0.0.1", client_port),) and settings.etcd_ca
        assert settings.etcd_cert and settings.etcd_key
        tls = EtcdTls.from_files(settings.etcd_ca, settings.etcd_cert, settings.etcd_key)
        assert asyncio.run(round_trip(settings.etcd_endpoints, tls)) == {"ok": True}
        with pytest.raises(EtcdUnavailable):
            asyncio.run(round_trip(settings.etcd_endpoints, None))
    finally:
        process.kill()


async def round_trip(endpoints: tuple[tuple[str, int], ...], tls: EtcdTls | None) -> object:
    etcd = Etcd(endpoints, timeout=3, tls=tls)
    try:
        await etcd.put("/mao/v1/install-check", {"ok": True})
        found = await etcd.get("/mao/v1/install-check")
        return found.value if found else None
    finally:
        await etcd.close()
