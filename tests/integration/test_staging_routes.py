"""The fetch data mode's two routes on a live orchestrator (its whole middleware chain): a ticket that
a backend of this instance issued (a FetchExchange over the node's data folder, as
``kubernetes.from_instance`` builds it) is the only way in; the API token is not one."""

from __future__ import annotations

import asyncio
import io
import tarfile

import requests

from orchestrator.executors.fetch import FetchExchange
from orchestrator.executors.seam import ContainerSpec, Identity, InputData, OutputData

from .conftest import Node


def test_a_live_node_serves_and_takes_tarballs_for_tickets_only(node: Node, tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "in" / "a.txt").write_text("input")
    spec = ContainerSpec(
        identity=Identity(instance="i", pipeline="p", run="live1", step="s", position=0, attempt=1),
        image="busybox",
        input=InputData(commit="0" * 40, folder=tmp_path / "in"),
        output=OutputData(folder=tmp_path / "work"),
        user=(65534, 65534),
        timeout=60,
    )
    exchange = FetchExchange(node.data_dir / "staging")
    plan = asyncio.run(exchange.issue(spec, node.api.url, input_seconds=60, output_seconds=60))
    url = f"{node.api.url}/staging/{spec.name}"

    # The API token opens everything else, not these: the answer names the ticket.
    answer = requests.get(f"{url}/input", headers={"Authorization": node.api.session.headers["Authorization"]}, timeout=30)
    assert answer.status_code == 401 and answer.json()["error"] == "staging_ticket"
    assert requests.get(f"{url}/input", timeout=30).status_code == 401

    ticket = {"Authorization": f"Bearer {plan.input_token.get_secret_value()}"}
    answer = requests.get(f"{url}/input", headers=ticket, timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        assert "input/a.txt" in tar.getnames()
    assert requests.get(f"{url}/input", headers=ticket, timeout=30).json()["error"] == "staging_ticket_spent"

    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        info = tarfile.TarInfo("./out.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"out"))
    upload = {"Authorization": f"Bearer {plan.output_token.get_secret_value()}", "Content-Type": "application/x-tar"}
    answer = requests.put(f"{url}/output", data=body.getvalue(), headers=upload, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"attempt": spec.name, "bytes": 3}
    asyncio.run(exchange.bring_back(spec))
    assert (tmp_path / "work" / "out.txt").read_text() == "out"
    asyncio.run(exchange.discard(spec.name))
