"""Registries that hold something this version did not write, and the prototype's null tool fields."""

from __future__ import annotations

import aetcd
import pytest

from tests import servers
from tests.api import Api, assert_error, unique

from .conftest import Node


async def etcd_put(etcd: servers.EtcdServer, key: str, value: bytes) -> None:
    host, port = etcd.endpoint.rsplit(":", 1)
    async with aetcd.Client(host, int(port), timeout=10) as client:
        await client.put(key.encode(), value)


async def etcd_delete(etcd: servers.EtcdServer, key: str) -> None:
    host, port = etcd.endpoint.rsplit(":", 1)
    async with aetcd.Client(host, int(port), timeout=10) as client:
        await client.delete(key.encode())


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("tools", b"{not json"),
        ("tools", b'{"name": "x", "image": 5}'),
        ("tools", b"[1, 2]"),
        ("datasets", b'{"master": "-uevil", "nodes": []}'),
        ("datasets", b'"just a string"'),
        ("pipelines", b'{"steps": "nope"}'),
    ],
)
async def test_malformed_registry_values(
    sqlite_node: Node, etcd: servers.EtcdServer, kind: str, value: bytes
) -> None:
    api = sqlite_node.api
    name = unique("bad")
    key = f"/mao/v1/{kind}/{name}"
    good = unique("good")
    if kind == "tools":
        api.tool(good)
    elif kind == "datasets":
        api.local_dataset(good)
    await etcd_put(etcd, key, value)
    try:
        listed = api.ok(api.get(f"/registry/{kind}"))
        assert name not in listed and (kind == "pipelines" or good in listed)
        api.ok(api.get(f"/registry/{kind}"))  # listed again: still fine, and warned about only once
        alone = assert_error(api.get(f"/registry/{kind}/{name}"), 502, "malformed_registry_entry")
        assert key in alone["message"] and alone["key"] == key
        if kind != "pipelines":
            # A pipeline using it cannot be initialised, and says which key is at fault.
            step = {"name": "s", "tool": name if kind == "tools" else good, "output_dataset": name}
            if kind == "tools":
                step["output_dataset"] = unique("missing")
            init = api.post("/pipeline/init", {"name": unique("p"), "steps": [step]})
            assert init.status_code in (400, 502), init.text
            assert "Traceback" not in init.text and init.status_code != 500
            if init.status_code == 502:
                assert key in init.json()["message"]
        # One warning naming the key, however often it was listed or read (federation/values.py).
        assert sqlite_node.service.log_text().count(f"skipping the etcd value of {key} ") == 1
    finally:
        await etcd_delete(etcd, key)


def test_null_optional_tool_fields_are_empty(api: Api) -> None:
    name = unique("nulls")
    body = {"name": name, "image": "busybox:latest"} | dict.fromkeys(
        ("author", "data_repo", "code_repo", "artefact", "description")
    )
    stored = api.ok(api.post("/registry/tools", body))
    assert stored["author"] == "" and stored["description"] == ""
    assert api.ok(api.get(f"/registry/tools/{name}"))["artefact"] == ""
    # A required field stays required.
    assert_error(api.post("/registry/tools", {"name": unique("t"), "image": None}), 400)
