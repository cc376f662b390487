"""maoctl's gateway key commands against a live orchestrator; the key they print works at once."""

from __future__ import annotations

import json

from tests.api import Api, assert_error, unique
from tests.ctl_helpers import maoctl


def test_gateway_keys_from_the_cli(sqlite_node) -> None:
    url = sqlite_node.service.url
    name = unique("cli-tool")
    created = maoctl(url, "--json", "gateway", "key", "create", "--name", name)
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)["key"]
    tool = Api(url, key)
    tool.ok(tool.post("/write", {"key": unique("cli"), "value": 1}))

    human = maoctl(url, "gateway", "key", "create", "--name", unique("cli-human"))
    assert human.exit_code == 0 and "mao_gw_" in human.stdout and "not shown again" in human.stderr
    listed = maoctl(url, "--json", "gateway", "key", "list")
    assert listed.exit_code == 0
    mine = next(k for k in json.loads(listed.stdout) if k["name"] == name)
    assert mine["last_used_at"] and "key" not in mine
    table = maoctl(url, "gateway", "key", "list")
    assert table.exit_code == 0 and name in table.stdout and "mao_gw_" not in table.stdout

    assert maoctl(url, "gateway", "key", "create", "--name", name).exit_code == 1  # 409: one line
    assert maoctl(url, "gateway", "key", "create", "--name", "../x").exit_code == 2  # refused before sending
    declined = maoctl(url, "gateway", "key", "revoke", "--name", name, input="n\n")
    assert declined.exit_code == 1
    tool.ok(tool.post("/write", {"key": unique("cli"), "value": 3}))  # declined: the key still works
    revoked = maoctl(url, "gateway", "key", "revoke", "--name", name, "--yes")
    assert revoked.exit_code == 0 and f"Revoked gateway key {name}" in revoked.stdout
    assert_error(tool.post("/write", {"key": unique("cli"), "value": 2}), 401)
    missing = maoctl(url, "gateway", "key", "revoke", "--name", name, "--yes")
    assert missing.exit_code == 1 and "no gateway key" in missing.output
