"""Bad input on every endpoint: a JSON error with the right status, never a 500, nothing written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import requests

from orchestrator.federation import keys
from orchestrator.federation.etcd import Etcd
from tests.api import Api, assert_error, unique
from tests.integration.conftest import Node
from tests.servers import EtcdServer

STEP = {
    "name": "s",
    "tool": "t",
    "input_dataset": None,
    "output_dataset": "d",
    "env": None,
    "cmd": None,
    "docker_socket": False,
}

CASES = [
    ("POST", "/registry/tools", {"name": "x", "image": "a b"}, 400),
    ("POST", "/registry/datasets", {"name": "x"}, 400),
    ("POST", "/registry/datasets", {"name": "x", "body": {"master": "--upload-pack=evil"}}, 400),
    ("POST", "/pipeline/init", {"name": "p"}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": []}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": "acquisition"}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": [{**STEP, "name": "../../x"}]}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": [{**STEP, "cmd": "rm -rf /"}]}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": [{**STEP, "env": {"A;B": "x"}}]}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": [{**STEP, "env": ["A=1"]}]}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": [{**STEP, "docker_socket": "yes please"}]}, 400),
    ("POST", "/pipeline/init", {"name": "p", "steps": [STEP, STEP]}, 400),
    ("POST", "/pipeline/init", {"name": "-p", "steps": [STEP]}, 400),
    ("POST", "/pipeline/run", {}, 400),
    ("POST", "/pipeline/run", {"name": None}, 400),
    ("POST", "/pipeline/run", {"name": "../p"}, 400),
    ("POST", "/pipeline/run", {"name": "p", "wait": "no"}, 400),
    ("POST", "/pipeline/run", {"name": "p", "cron": 5}, 400),
    ("POST", "/pipeline/run", {"name": "not-initialised-here"}, 404),
    ("POST", "/bare-repo/init", {"name": "../escape"}, 400),
    ("POST", "/bare-repo/init", {"name": "-bare"}, 400),
    ("POST", "/bare-repo/init", {}, 400),
    ("DELETE", "/pipeline/not-initialised-here", None, 404),
    ("DELETE", "/pipeline/-x", None, 400),
    ("DELETE", "/jobs/../x", None, 404),
    ("DELETE", "/jobs/x;y", None, 400),
    ("GET", "/runs/does-not-exist", None, 400),
    ("GET", "/runs/0123456789abcdef0123456789abcdef", None, 404),
    ("GET", "/runs?status=exploded", None, 400),
    ("GET", "/runs?limit=lots", None, 400),
    ("GET", "/runs?limit=0", None, 400),
    ("GET", "/runs?pipeline=-x", None, 400),
    ("GET", "/schedules?ticks=lots", None, 400),
    ("GET", "/schedules?ticks=5000", None, 400),
    ("GET", "/pipeline/unknown-pipeline", None, 404),
    ("GET", "/registry/pipelines/unknown-pipeline", None, 404),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"), CASES, ids=[f"{m} {p} {i}" for i, (m, p, _, _) in enumerate(CASES)]
)
def test_bad_input(api: Api, method: str, path: str, body: object, status: int) -> None:
    response = api.session.request(method, api.url + path, json=body, timeout=30)
    assert_error(response, status)


def test_every_post_endpoint_refuses_non_objects(api: Api) -> None:
    for path in (
        "/registry/tools",
        "/registry/datasets",
        "/pipeline/init",
        "/pipeline/run",
        "/bare-repo/init",
    ):
        for raw in (b"{", b"[]", b"null", b"42"):
            assert_error(
                api.post(path, data=raw, headers={"Content-Type": "application/json"}), 400, "invalid_json"
            )


def test_bad_input_wrote_nothing(api: Api) -> None:
    assert "p" not in [p["name"] for p in api.ok(api.get("/pipeline"))]
    assert "x" not in api.ok(api.get("/registry/tools"))
    assert "x" not in api.ok(api.get("/registry/datasets"))
    assert_error(api.get("/registry/pipelines/p"), 404)


def test_deeply_nested_json_is_a_400(api: Api) -> None:
    nested = b'{"name": "x", "value": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for path in ("/registry/tools", "/pipeline/init", "/write", "/read"):
        assert_error(
            api.post(path, data=nested, headers={"Content-Type": "application/json"}), 400, "invalid_json"
        )


# -- unknown fields ----------------------------------------------------------------------------------
# Every route that takes a body refuses a field it does not know with a 400 naming it, before it
# writes anything: a misspelt optional field must not silently become its default.


def registry_snapshot(etcd: EtcdServer) -> dict[str, tuple[int, Any]]:
    """Every registry key in etcd with its revision and value."""

    async def read() -> dict[str, tuple[int, Any]]:
        client = Etcd([(etcd.host, etcd.client_port)], timeout=5)
        try:
            return {
                kv.key: (kv.mod_revision, kv.value)
                for prefix in (keys.TOOLS, keys.DATASETS, keys.PIPELINES)
                for kv in await client.list_prefix(prefix)
            }
        finally:
            await client.close()

    return asyncio.run(read())


def assert_unknown(response: requests.Response, *fields: str) -> None:
    body = assert_error(response, 400, "invalid_request")
    assert body["unknown_fields"] == list(fields), body
    for field in fields:
        assert f"{field}: unknown field" in body["message"], body


def registry_requests(api: Api) -> list[tuple[str, dict[str, Any], str, str]]:
    """(route, a body that would be accepted, the unknown field added to it, where to look it up)."""
    tool, dataset, pipeline = unique("strict-tool"), unique("strict-ds"), unique("strict-p")
    api.tool(tool)
    api.local_dataset(dataset)
    path = api.ok(api.post("/bare-repo/init", {"name": unique("strict-master")}))["path"]
    step = {**STEP, "name": "s", "tool": tool, "output_dataset": dataset}
    new_tool = unique("strict-new-tool")
    new_dataset, flat_dataset = unique("strict-new-ds"), unique("strict-flat-ds")
    return [
        (
            "/registry/tools",
            {"name": new_tool, "image": "busybox:latest"},
            "imgae",
            f"/registry/tools/{new_tool}",
        ),
        (
            "/registry/datasets",
            {"name": new_dataset, "body": {"master": path, "nodes": []}},
            "url",
            f"/registry/datasets/{new_dataset}",
        ),
        (
            "/registry/datasets",
            {"name": flat_dataset, "master": path},
            "nodez",
            f"/registry/datasets/{flat_dataset}",
        ),
        (
            "/pipeline/init",
            {"name": pipeline, "steps": [step]},
            "instances",
            f"/registry/pipelines/{pipeline}",
        ),
    ]


def test_an_unknown_field_on_a_registry_route_is_a_400_and_writes_nothing(api: Api, etcd: EtcdServer) -> None:
    for route, good, field, lookup in registry_requests(api):
        before = registry_snapshot(etcd)
        assert_unknown(api.post(route, {**good, field: "x"}), field)
        assert registry_snapshot(etcd) == before, route
        assert_error(api.get(lookup), 404)
        # The same body without the unknown field is accepted: the field was the only problem.
        api.ok(api.post(route, good))
        api.ok(api.get(lookup))


def test_unknown_fields_inside_a_registry_body_are_named_with_their_path(api: Api, etcd: EtcdServer) -> None:
    tool = unique("strict-tool")
    api.tool(tool)
    dataset = unique("strict-ds")
    api.local_dataset(dataset)
    before = registry_snapshot(etcd)
    assert_unknown(
        api.post("/registry/datasets", {"name": unique("d"), "body": {"master": "/x", "colour": 1}}),
        "body.colour",
    )
    step = {**STEP, "tool": tool, "output_dataset": dataset, "retires": 3}
    assert_unknown(api.post("/pipeline/init", {"name": unique("p"), "steps": [step]}), "steps.0.retires")
    assert_unknown(api.post("/registry/tools", {"name": "t", "image": "i", "a": 1, "b": 2}), "a", "b")
    assert registry_snapshot(etcd) == before


def test_the_prototypes_payloads_are_still_accepted(api: Api) -> None:
    """What the prototype's maoctl, installer and README send: every field is one we model."""
    tool, dataset = unique("proto-tool"), unique("proto-ds")
    # maoctl tool add: every flag not given is null.
    nulls = {k: None for k in ("author", "data_repo", "code_repo", "artefact")}
    api.ok(api.post("/registry/tools", {"name": tool, "image": "busybox:latest", **nulls}))
    # The installer adds marketplace tools with their description.
    api.ok(
        api.post(
            "/registry/tools",
            {"name": tool, "author": "a", "image": "busybox:latest", "data_repo": "https://example.org/d",
             "code_repo": "...", "artefact": "system", "description": "A benchmark."},
        )
    )  # fmt: skip
    path = api.ok(api.post("/bare-repo/init", {"name": dataset}))["path"]
    api.ok(api.post("/registry/datasets", {"name": dataset, "body": {"master": path, "nodes": []}}))
    pipeline = unique("proto-p")
    step = {"name": "step_1", "tool": tool, "input_dataset": None, "output_dataset": dataset,
            "docker_socket": False, "cmd": [], "env": {}}  # fmt: skip
    answer = api.ok(api.post("/pipeline/init", {"name": pipeline, "description": "d", "steps": [step]}))
    assert answer["ok"] is True
    api.ok(api.delete(f"/pipeline/{pipeline}"))


OTHER_ROUTES: list[tuple[str, dict[str, Any], str]] = [
    ("/pipeline/run", {"name": "p", "wiat": False}, "wiat"),
    (
        "/pipeline/backfill",
        {"name": "p", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "dryrun": True},
        "dryrun",
    ),  # fmt: skip
    ("/bare-repo/init", {"name": "strict-never-created", "bare": True}, "bare"),
    ("/write", {"key": "raw/strict/x", "value": 1, "ttl": 5}, "ttl"),
    ("/read", {"key": "raw/strict/x", "from": 1}, "from"),
    ("/inspect", {"key": "raw/strict", "recursive": True}, "recursive"),
    ("/gateway/keys", {"name": "strict-never-created", "expires": 5}, "expires"),
    ("/audits", {"dataset": "d", "file": "f", "timeout": 5}, "timeout"),
    (
        "/federation/etcd-members",
        {"name": "strict-never", "peer_url": "http://127.0.0.1:1", "learner": True},
        "learner",
    ),  # fmt: skip
    ("/runs/0123456789abcdef0123456789abcdef/cancel", {"force": True}, "force"),
]


@pytest.mark.parametrize(("route", "body", "field"), OTHER_ROUTES, ids=[r for r, _, _ in OTHER_ROUTES])
def test_every_other_body_route_refuses_unknown_fields(
    sqlite_node: Node, route: str, body: dict[str, Any], field: str
) -> None:
    assert_unknown(sqlite_node.api.post(route, body), field)


def test_what_the_unknown_fields_did_not_create(sqlite_node: Node) -> None:
    api = sqlite_node.api
    for route, body, _ in OTHER_ROUTES:
        api.post(route, body)
    repos = Path(api.ok(api.post("/bare-repo/init", {"name": unique("strict-probe")}))["path"]).parent
    assert not (repos / "strict-never-created.git").exists()
    assert "strict-never-created" not in [k["name"] for k in api.ok(api.get("/gateway/keys"))]
    assert_error(api.post("/read", {"key": "raw/strict/x"}), 404)
    members = api.ok(api.get("/federation/members"))["etcd"]
    assert "strict-never" not in [m["name"] for m in members]


def test_a_write_without_fields_takes_no_body_or_an_empty_object(sqlite_node: Node) -> None:
    api = sqlite_node.api
    route = "/runs/0123456789abcdef0123456789abcdef/cancel"
    assert_error(api.post(route, {}), 404)
    assert_error(api.post(route), 404)  # no body at all: the prototype's way, and maoctl's
    # As documented, with no body and no content type either (`curl -X POST URL/runs/ID/cancel`).
    bare = requests.post(
        api.url + route, headers={"Authorization": api.session.headers["Authorization"]}, timeout=30
    )
    assert "Content-Type" not in bare.request.headers
    assert_error(bare, 404)
    # A body still needs its JSON content type; a route that needs a body says it is missing.
    assert_error(api.post(route, data="{}", headers={"Content-Type": "text/plain"}), 415)
    bare_run = requests.post(
        api.url + "/pipeline/run", headers={"Authorization": api.session.headers["Authorization"]}, timeout=30
    )
    assert_error(bare_run, 400, "invalid_json")


def test_unknown_query_parameters_are_ignored(sqlite_node: Node) -> None:
    """The decision for query parameters: they filter reads, so an unknown one is ignored (proxies
    and browsers add their own), on every route alike."""
    api = sqlite_node.api
    assert api.get("/runs", limit=1, _="1700000000").status_code == 200
    assert api.get("/registry/tools", colour="red").status_code == 200
    assert api.get("/schedules", ticks=1, verbose=1).status_code == 200


def test_the_executors_routes_refuse_unknown_fields_and_bad_names(executor, tmp_path: Path) -> None:
    """The executor's own API follows the same rule (its models are shared with the orchestrator)."""
    run = {"image": "busybox:latest", "output_dir": str(tmp_path), "cmd": ["true"]}
    cases = [
        ("/run", {**run, "timout": 5}, "timout"),
        ("/validate", {**run, "privileged": True}, "privileged"),
        ("/kill", {"run": "abc", "force": True}, "force"),
        ("/kill", {"run": "abc", "step": "../x"}, "step"),
        ("/image", {"image": "busybox:latest", "pull": True}, "pull"),
    ]
    for path, body, field in cases:
        response = executor.request("POST", path, json=body, headers=executor.headers)
        answer = assert_error(response, 400)
        assert answer["message"].startswith(f"{field}: "), answer
