"""Registry round trips through the HTTP API, against real etcd."""

from __future__ import annotations

import pytest

from tests.api import Api, assert_error, unique


def test_tool_round_trip(api: Api) -> None:
    name = unique("tool")
    body = {
        "name": name,
        "author": "me",
        "image": "busybox:latest",
        "data_repo": "d",
        "code_repo": "c",
        "artefact": "a",
    }
    assert api.ok(api.post("/registry/tools", body))["name"] == name
    assert name in api.ok(api.get("/registry/tools"))
    tool = api.ok(api.get(f"/registry/tools/{name}"))
    assert tool == {**body, "description": ""}
    api.ok(api.delete(f"/registry/tools/{name}"))
    assert_error(api.get(f"/registry/tools/{name}"), 404, "not_found")
    assert_error(api.delete(f"/registry/tools/{name}"), 404)


def test_dataset_round_trip_keeps_registered_nodes(api: Api) -> None:
    name = unique("ds")
    api.ok(
        api.post("/registry/datasets", {"name": name, "body": {"master": "git-link", "nodes": ["a-node1"]}})
    )
    # Re-registering (e.g. a new master URL) must not drop other instances' node branches.
    api.ok(
        api.post(
            "/registry/datasets", {"name": name, "body": {"master": "https://example.org/x.git", "nodes": []}}
        )
    )
    dataset = api.ok(api.get(f"/registry/datasets/{name}"))
    assert dataset == {"name": name, "master": "https://example.org/x.git", "nodes": ["a-node1"]}
    assert name in api.ok(api.get("/registry/datasets"))
    api.ok(api.delete(f"/registry/datasets/{name}"))
    assert_error(api.get(f"/registry/datasets/{name}"), 404)


def test_registrations_are_shared_between_instances(sqlite_node, postgres_node) -> None:
    name = unique("shared")
    sqlite_node.api.tool(name)
    assert postgres_node.api.ok(postgres_node.api.get(f"/registry/tools/{name}"))["image"] == "busybox:latest"
    owner = postgres_node.api.ok(postgres_node.api.get(f"/registry/tools/{name}/owner"))
    assert owner["owner"] == sqlite_node.name and owner["proof"] == "claim"  # the session etcd has no TLS
    # Only the instance that registered it deletes it (tests/integration/federation/test_ownership.py).
    assert_error(postgres_node.api.delete(f"/registry/tools/{name}"), 403, "not_owner")
    sqlite_node.api.ok(sqlite_node.api.delete(f"/registry/tools/{name}"))
    assert_error(postgres_node.api.get(f"/registry/tools/{name}"), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "-rf", "image": "busybox"},
        {"name": "../../etc", "image": "busybox"},
        {"name": "ok", "image": "--privileged"},
        {"name": "ok"},
        {"image": "busybox"},
        {"name": ["x"], "image": "busybox"},
    ],
)
def test_bad_tools_are_400_and_not_stored(api: Api, body: dict) -> None:
    before = api.ok(api.get("/registry/tools"))
    assert_error(api.post("/registry/tools", body), 400, "invalid_request")
    assert api.ok(api.get("/registry/tools")) == before


@pytest.mark.parametrize(
    "body",
    [
        {"name": "d", "body": {"master": "ext::sh -c touch% /tmp/pwned"}},
        {"name": "d", "body": {"master": "-uhack"}},
        {"name": "d", "body": {"master": ""}},
        {"name": "d/../x", "body": {"master": "/tmp/x"}},
        {"name": "d", "body": {"master": "/tmp/x", "nodes": ["../x"]}},
        {"name": "d", "body": "master"},
    ],
)
def test_bad_datasets_are_400(api: Api, body: dict) -> None:
    assert_error(api.post("/registry/datasets", body), 400)
    assert_error(api.get("/registry/datasets/d"), 404)


def test_bodies_that_are_not_json_objects(api: Api) -> None:
    for raw in (b"not json", b"[1, 2]", b"", b'"text"'):
        assert_error(
            api.post("/registry/tools", data=raw, headers={"Content-Type": "application/json"}),
            400,
            "invalid_json",
        )


def test_invalid_names_in_paths(api: Api) -> None:
    for path in ("/registry/tools/-x", "/registry/datasets/.hidden", "/registry/pipelines/a..b"):
        assert_error(api.get(path), 400, "invalid_name")
    assert_error(api.get("/registry/tools/..%2F..%2Fetc"), 400)
    assert_error(api.get("/no/such/endpoint"), 404, "not_found")
    assert_error(api.session.put(api.url + "/registry/tools", json={}), 405)
