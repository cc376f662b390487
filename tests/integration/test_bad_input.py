"""Bad input on every endpoint: a JSON error with the right status, never a 500, nothing written."""

from __future__ import annotations

import pytest

from tests.api import Api, assert_error

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
