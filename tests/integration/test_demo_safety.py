"""The one-machine demo is as safe toward web pages as a real install (docs/security.md): its etcd,
started exactly as ``./scripts/demo.sh`` starts it (its ``start-etcd`` step, on free ports in a
temporary demo folder), answers no request without a certificate of the demo's CA: not a plain HTTP
request to its gateway such as a page in the browser makes, not one over TLS without a client
certificate, and not one on its peer port. A client with the demo's certificate is served (so the
refusals are the certificates', not an etcd that is not there).

The browser test makes the requests from a real page in headless Chromium, and, as a control, the
same page's requests do write into a plain-HTTP etcd (the test session's): what the demo used to run.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests import servers
from tests.integration.conftest import chromium
from tests.servers.process import REPO_ROOT, _free_ports

DEMO = REPO_ROOT / "scripts" / "demo.sh"


@dataclass(frozen=True)
class DemoEtcd:
    port: int
    peer_port: int
    pki: Path

    def tls(self, with_certificate: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if with_certificate:
            context.load_cert_chain(self.pki / "client.crt", self.pki / "client.key")
        return context

    def call(self, path: str, body: dict[str, str], with_certificate: bool = True) -> dict[str, object]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.tls(with_certificate), timeout=10
        )
        try:
            connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def demo_env(folder: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAO_")}
    return {**env, "MAO_DEMO_DIR": str(folder), "MAO_DEMO_ETCD_PORT": str(port)}


@pytest.fixture(scope="module")
def demo_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoEtcd]:
    folder = tmp_path_factory.mktemp("demo")
    # Two consecutive free ports: demo.sh puts the peer port right after the client port.
    port = next(p for p in _free_ports(20) if _free(p + 1))
    env = demo_env(folder, port)
    started = subprocess.run(
        ["bash", str(DEMO), "start-etcd"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        config = (folder / "mao.env").read_text()
        assert "MAO_ETCD_INSECURE" not in config and f"MAO_ETCD_CA={folder / 'pki' / 'ca.crt'}" in config
        yield DemoEtcd(port, port + 1, folder / "pki")
    finally:
        subprocess.run(["bash", str(DEMO), "stop"], env=env, capture_output=True, timeout=60, cwd=REPO_ROOT)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_the_demos_etcd_answers_only_its_own_certificates(demo_etcd: DemoEtcd) -> None:
    key = "/mao/v1/tools/planted"
    # A plain HTTP request to the gateway, as a page would send it (a "simple" request: no preflight).
    for path, body in (("/v3/kv/range", {"key": b64("/mao/")}), ("/v3/kv/put", {"key": b64(key), "value": b64("x")})):
        for port in (demo_etcd.port, demo_etcd.peer_port):
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{port}{path}",
                    data=json.dumps(body),
                    headers={"Content-Type": "text/plain"},
                    timeout=10,
                )
            except requests.ConnectionError:
                continue  # refused: nothing read, nothing written
            assert answer.status_code >= 400 and "kvs" not in answer.text, answer.text
    # TLS without a client certificate: refused at the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        demo_etcd.call("/v3/kv/put", {"key": b64(key), "value": b64("x")}, with_certificate=False)
    # The demo's own client certificate is served, and nothing above was written.
    assert demo_etcd.call("/v3/kv/range", {"key": b64(key)}).get("kvs") is None
    demo_etcd.call("/v3/kv/put", {"key": b64("/mao/v1/control"), "value": b64("ok")})
    found = demo_etcd.call("/v3/kv/range", {"key": b64("/mao/v1/control")})
    assert base64.b64decode(found["kvs"][0]["value"]).decode() == "ok"  # type: ignore[index]


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        text = b"<!doctype html><title>a page</title><p>nothing to see"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.browser
def test_a_web_page_cannot_reach_the_demos_etcd(demo_etcd: DemoEtcd, etcd: servers.EtcdServer) -> None:
    planted = "/mao/v1/tools/planted-by-a-page"
    body = json.dumps({"key": b64(planted), "value": b64("evil")})
    script = """
        const [urls, body, done] = arguments;
        Promise.all(urls.map(url => fetch(url, {method: 'POST', mode: 'no-cors', body})
            .then(() => 'sent', e => 'failed: ' + e))).then(done);
    """
    # The page comes from a web server on this host (a page whose name a DNS rebinding points at
    # 127.0.0.1, or any local web app's): Chromium keeps pages from the internet off local addresses
    # anyway (Local Network Access), so this is the position from which a page could reach etcd.
    page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        with chromium() as driver:
            driver.set_script_timeout(30)
            driver.get(f"http://127.0.0.1:{page.server_address[1]}/")
            demo_urls = [
                f"{scheme}://127.0.0.1:{port}/v3/kv/put"
                for scheme in ("http", "https")
                for port in (demo_etcd.port, demo_etcd.peer_port)
            ]
            driver.execute_async_script(script, demo_urls, body)
            # The control: the same page writes into a plain-HTTP etcd (the session's: tests only).
            assert driver.execute_async_script(script, [f"http://{etcd.endpoint}/v3/kv/put"], body) == ["sent"]
    finally:
        page.shutdown()
    assert demo_etcd.call("/v3/kv/range", {"key": b64(planted)}).get("kvs") is None
    plain = requests.post(f"http://{etcd.endpoint}/v3/kv/range", json={"key": b64(planted)}, timeout=10).json()
    assert base64.b64decode(plain["kvs"][0]["value"]) == b"evil", "the control page could not write: test broken"
    requests.post(f"http://{etcd.endpoint}/v3/kv/deleterange", json={"key": b64(planted)}, timeout=10)
