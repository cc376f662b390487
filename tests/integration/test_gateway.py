"""The gateway on live orchestrators: namespace confinement, gateway keys and their scopes, raw entries'
TTL, the 400/413/429 bounds, and insights published by steps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import servers
from tests.api import Api, assert_error, unique

from .conftest import orchestrator_env

ADMIN_TOKEN = "gw-admin-t0ken"
TTL = 3
APP = "/usr/src/app"


@pytest.fixture(scope="module")
def guarded(servers_tmp: Path, etcd, executor) -> Iterator[servers.ServiceProcess]:
    """An orchestrator with an admin token and raw entries kept 3 s."""
    env = orchestrator_env(
        "node-gw",
        servers_tmp / "node-gw",
        etcd.endpoint,
        executor,
        MAO_API_TOKEN=ADMIN_TOKEN,
        MAO_RAW_TTL=str(TTL),
    )
    service = servers.start_orchestrator(env, log_dir=servers_tmp / "logs", name="node-gw")
    yield service
    service.stop()


def as_key(url: str, key: str | None) -> Api:
    """A client sending ``key`` as its token, or no token at all (not the node's: "" means none)."""
    return Api(url, key or "")


# -- confinement ------------------------------------------------------------------------------------

ESCAPES = [
    "../members/node-sqlite",
    "raw/../members/node-sqlite",
    "insights/../../locks/datasets/x",
    "/mao/v1/members/node-sqlite",
    "%2e%2e/members/node-sqlite",
    "raw/%2e%2e/members",
    "raw//members",
    "a/./b",
    "a\\..\\b",
    "x" * 257,
    "/".join(["s"] * 9),
    "",
]


def test_no_request_escapes_the_gateway_namespaces(sqlite_node) -> None:
    api = sqlite_node.api
    members_before = api.ok(api.get("/federation/members"))["instances"]
    for key in ESCAPES:
        for route, body in (
            ("/write", {"key": key, "value": "pwned"}),
            ("/read", {"key": key}),
            ("/inspect", {"key": key}),
        ):
            assert_error(api.post(route, body), 400, "invalid_key")
    for key in (None, 7, ["members"], {"k": 1}):
        assert_error(api.post("/read", {"key": key}), 400, "invalid_key")

    # Names of other namespaces are not refused, they are confined: raw/members/<x> is just a raw entry.
    tag = unique("t")
    for protected in (
        "members/node-sqlite",
        "locks/datasets/x",
        "tools/x",
        "datasets/x",
        "pipelines/x",
        "schedules/x",
        "audits/x",
    ):
        key = f"{protected}-{tag}" if "/" in protected else protected
        written = api.ok(api.post("/write", {"key": key, "value": "not a registry"}))
        assert written["key"] == f"raw/{key}"
        assert api.ok(api.post("/read", {"key": f"raw/{key}"}))["value"] == "not a registry"
    assert_error(api.post("/read", {"key": "members/node-sqlite"}), 404, "not_found")
    assert_error(api.post("/read", {"key": "insights/members/node-sqlite"}), 404, "not_found")
    under_members = api.ok(api.post("/inspect", {"key": "members"}))
    assert f"raw/members/node-sqlite-{tag}" in under_members
    assert all(k.startswith("raw/members/") and v["by"] == "admin" for k, v in under_members.items())
    # What the gateway can see never includes a member, lock, registry or schedule record.
    everything = {
        **api.ok(api.post("/inspect", {"key": "raw"})),
        **api.ok(api.post("/inspect", {"key": "insights"})),
    }
    assert all(k.startswith(("raw/", "insights/")) or k == "truncated" for k in everything)
    assert api.ok(api.get("/federation/members"))["instances"] == members_before


def test_write_read_inspect_round_trip(node) -> None:
    api = node.api
    base = unique("sensors")
    revisions = []
    for i in range(3):
        answer = api.ok(api.post("/write", {"key": f"{base}/t{i}", "value": {"celsius": 20 + i}}))
        assert answer["key"] == f"raw/{base}/t{i}" and answer["ttl"] == 60
        revisions.append(answer["revision"])
    assert revisions == sorted(revisions) and len(set(revisions)) == 3
    stored = api.ok(api.post("/read", {"key": f"{base}/t1"}))
    assert stored["value"] == {"celsius": 21} and stored["instance"] == node.name and stored["by"] == "admin"
    assert stored["written_at"].endswith("+00:00")
    assert api.ok(api.post("/read", {"key": f"raw/{base}/t1"})) == stored
    listed = api.ok(api.post("/inspect", {"key": base}))
    assert sorted(listed) == [f"raw/{base}/t{i}" for i in range(3)]
    # A prefix is a whole segment: base-x is not under base.
    api.ok(api.post("/write", {"key": f"{base}x", "value": 1}))
    assert f"raw/{base}x" not in api.ok(api.post("/inspect", {"key": base}))
    # Any JSON value.
    for value in (None, 0, "text", [1, "two", {"three": 3}], {"nested": {"deep": [True, False]}}):
        api.ok(api.post("/write", {"key": f"{base}/any", "value": value}))
        assert api.ok(api.post("/read", {"key": f"{base}/any"}))["value"] == value


# -- bounds -----------------------------------------------------------------------------------------


def test_bad_requests_are_400(sqlite_node) -> None:
    api = sqlite_node.api
    assert_error(api.post("/write", {"key": unique("k")}), 400, "invalid_request")
    assert_error(api.post("/write", {"value": 1}), 400, "invalid_request")
    assert_error(api.post("/read", {}), 400, "invalid_request")
    assert_error(api.post("/write", data="{not json", headers={"content-type": "application/json"}), 400)
    assert_error(api.post("/write", json=[1, 2]), 400, "invalid_json")
    nan = '{"key": "' + unique("k") + '", "value": NaN}'
    assert_error(
        api.post("/write", data=nan, headers={"content-type": "application/json"}), 400, "invalid_value"
    )
    assert_error(api.post("/write", {"key": "insights/x", "value": 1}), 400, "invalid_key")


def test_values_over_64_kib_are_413(sqlite_node) -> None:
    api = sqlite_node.api
    key = unique("big")
    # A JSON string of exactly 65536 bytes with its quotes is the largest value accepted.
    api.ok(api.post("/write", {"key": key, "value": "x" * 65534}))
    body = assert_error(api.post("/write", {"key": key, "value": "x" * 65535}), 413, "payload_too_large")
    assert body["size"] == 65537 and body["limit"] == 65536
    assert api.ok(api.post("/read", {"key": key}))["value"] == "x" * 65534  # nothing half-written
    # Beyond the request size limit aiohttp refuses the body itself, still as JSON.
    assert_error(api.post("/write", {"key": key, "value": "x" * (5 * 1024 * 1024)}), 413)


def test_writes_beyond_the_rate_are_429_with_retry_after(sqlite_node) -> None:
    api = sqlite_node.api
    key = unique("busy")
    statuses = [api.post("/write", {"key": key, "value": i}).status_code for i in range(12)]
    assert statuses[:10] == [200] * 10 and 429 in statuses[10:]
    refused = api.post("/write", {"key": key, "value": "again"})
    body = assert_error(refused, 429, "too_many_requests")
    assert int(refused.headers["Retry-After"]) >= 1 and body["retry_after"] > 0
    api.ok(api.post("/write", {"key": unique("calm"), "value": 1}))  # other keys are not slowed down
    time.sleep(float(refused.headers["Retry-After"]))
    api.ok(api.post("/write", {"key": key, "value": "later"}))


# -- keys and their scopes --------------------------------------------------------------------------


def test_gateway_keys_can_only_use_the_gateway(guarded: servers.ServiceProcess) -> None:
    admin = as_key(guarded.url, ADMIN_TOKEN)
    name = unique("crawler")
    created = admin.session.post(guarded.url + "/gateway/keys", json={"name": name}, timeout=10)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("mao_gw_") and len(key) > 40
    listed = admin.ok(admin.get("/gateway/keys"))
    mine = next(k for k in listed if k["name"] == name)
    assert "key" not in mine and mine["last_used_at"] is None and key not in str(listed)
    assert_error(admin.post("/gateway/keys", {"name": name}), 409, "gateway_key_exists")
    assert_error(admin.post("/gateway/keys", {"name": "../x"}), 400)

    tool = as_key(guarded.url, key)
    entry = unique("from-tool")
    tool.ok(tool.post("/write", {"key": entry, "value": 42}))
    assert tool.ok(tool.post("/read", {"key": entry}))["by"] == name
    assert f"raw/{entry}" in tool.ok(tool.post("/inspect", {"key": entry}))
    for method, path in (
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/registry/tools"),
        ("POST", "/registry/tools"),
        ("GET", "/gateway/keys"),
        ("POST", "/gateway/keys"),
        ("DELETE", f"/gateway/keys/{name}"),
        ("POST", "/pipeline/run"),
        ("POST", "/audits"),
        ("GET", "/write"),
        ("GET", "/nowhere"),
    ):
        response = tool.session.request(method, guarded.url + path, json={}, timeout=10)
        assert_error(response, 403, "forbidden")
    used = next(k for k in admin.ok(admin.get("/gateway/keys")) if k["name"] == name)
    assert used["last_used_at"] is not None

    # The admin token can do everything, the gateway included; nothing or a wrong token nothing at all.
    admin.ok(admin.post("/write", {"key": entry, "value": 43}))
    assert admin.ok(admin.post("/read", {"key": entry}))["by"] == "admin"
    for other in (None, "wrong", "mao_gw_guessed", key + "x"):
        assert_error(as_key(guarded.url, other).post("/read", {"key": entry}), 401, "unauthorized")

    admin.ok(admin.delete(f"/gateway/keys/{name}"))
    assert_error(tool.post("/read", {"key": entry}), 401, "unauthorized")
    assert_error(admin.delete(f"/gateway/keys/{name}"), 404)
    assert all(k["name"] != name for k in admin.ok(admin.get("/gateway/keys")))
    assert key not in guarded.log_text() and ADMIN_TOKEN not in guarded.log_text()


def test_on_an_open_api_a_gateway_key_is_still_scoped(sqlite_node) -> None:
    api = sqlite_node.api
    name = unique("open")
    key = api.ok(api.post("/gateway/keys", {"name": name}))["key"]
    tool = as_key(api.url, key)
    entry = unique("open-entry")
    tool.ok(tool.post("/write", {"key": entry, "value": 1}))
    assert api.ok(api.post("/read", {"key": entry}))["by"] == name
    assert_error(tool.get("/registry/tools"), 403, "forbidden")
    api.ok(api.delete(f"/gateway/keys/{name}"))
    assert_error(tool.post("/write", {"key": entry, "value": 2}), 401)


def test_the_key_is_never_stored(sqlite_node) -> None:
    api = sqlite_node.api
    name = unique("stored")
    key = api.ok(api.post("/gateway/keys", {"name": name}))["key"]
    database = (sqlite_node.data_dir / "mao.db").read_bytes()
    wal = sqlite_node.data_dir / "mao.db-wal"
    assert key.encode() not in database + (wal.read_bytes() if wal.exists() else b"")
    api.ok(api.delete(f"/gateway/keys/{name}"))


# -- TTL --------------------------------------------------------------------------------------------


def test_raw_entries_expire_after_their_ttl(guarded: servers.ServiceProcess) -> None:
    admin = as_key(guarded.url, ADMIN_TOKEN)
    key = unique("short-lived")
    written = admin.ok(admin.post("/write", {"key": key, "value": "soon gone"}))
    start = time.monotonic()
    assert written["ttl"] == TTL
    time.sleep(TTL - 1)
    assert admin.ok(admin.post("/read", {"key": key}))["value"] == "soon gone"  # still there before TTL
    servers.wait_until(
        lambda: admin.post("/read", {"key": key}).status_code == 404, timeout=30, what="the entry to expire"
    )
    print(f"\nraw entry with MAO_RAW_TTL={TTL} lived {time.monotonic() - start:.1f} s")
    assert admin.ok(admin.post("/inspect", {"key": key})) == {}


# -- insights ---------------------------------------------------------------------------------------


def test_insights_are_published_or_ignored_with_a_reason(node) -> None:
    api = node.api
    good, bad, big, deep, none = (unique(p) for p in ("good", "bad", "big", "deep", "none"))
    for tool in (good, bad, big, deep, none):
        api.tool(tool)
    data, pipeline = unique("insights-data"), unique("insights")
    api.local_dataset(data)

    def step(name: str, tool: str, script: str) -> dict:
        return {"name": name, "tool": tool, "output_dataset": data, "cmd": ["sh", "-c", script]}

    steps = [
        step("good", good, f'echo \'{{"mean": 21.5, "n": 3}}\' > {APP}/data/insights.json'),
        step("bad", bad, f"echo '{{not json' > {APP}/data/insights.json"),
        step("big", big, f"head -c 307200 /dev/zero | tr '\\0' x > {APP}/data/insights.json"),
        # 1000 levels: json raises RecursionError (not ValueError) reading it; the step still succeeds.
        step(
            "deep",
            deep,
            f"(head -c 1000 /dev/zero | tr '\\0' '['; head -c 1000 /dev/zero | tr '\\0' ']') "
            f"> {APP}/data/insights.json",
        ),
        step("none", none, f"rm -f {APP}/data/insights.json; echo no insights > {APP}/data/n.txt"),
    ]
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": steps}))
    run = api.run(pipeline)
    assert run["status"] == "succeeded", run
    by_step = {s["name"]: s for s in run["steps"]}
    assert all(s["status"] == "succeeded" for s in run["steps"])
    assert by_step["good"]["insights"] == "published"
    assert by_step["bad"]["insights"].startswith("ignored: not valid JSON (")
    assert by_step["big"]["insights"] == "ignored: 300 KiB is over the 256 KiB limit"
    assert by_step["deep"]["insights"].startswith("ignored: nested too deeply")
    # "none" starts from ground-truth, which holds big's insights.json, and removes it: no insights.
    assert by_step["none"]["insights"] is None

    published = api.ok(api.post("/read", {"key": good}))
    assert published["value"] == {"mean": 21.5, "n": 3}
    assert published["tool"] == good and published["pipeline"] == pipeline and published["step"] == "good"
    assert published["run"] == run["id"] and published["instance"] == node.name
    assert published["commit"] == by_step["good"]["output_commit"]
    assert api.ok(api.post("/read", {"key": f"insights/{good}"})) == published
    assert f"insights/{good}" in api.ok(api.post("/inspect", {"key": good}))
    for ignored in (bad, big, deep, none):
        assert_error(api.post("/read", {"key": f"insights/{ignored}"}), 404)
    assert api.ok(api.get(f"/runs/{run['id']}"))["steps"][1]["insights"] == by_step["bad"]["insights"]


def test_requests_to_the_gateway_with_a_bad_method_are_json(sqlite_node) -> None:
    response = sqlite_node.api.get("/write")
    assert_error(response, 405, "method_not_allowed")
    # Without a token, the answer is 401 whatever the method: nothing is told to a stranger.
    assert_error(requests.get(sqlite_node.service.url + "/write", timeout=10), 401)
