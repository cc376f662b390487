"""Gateway keys are confined to the raw and insights namespaces, whatever a client sends."""

from __future__ import annotations

import pytest

from orchestrator.errors import BadRequest
from orchestrator.gateway.namespace import (
    MAX_KEY_LENGTH,
    MAX_SEGMENTS,
    GatewayKey,
    from_etcd_key,
    key_problem,
    read_keys,
    write_key,
)

ESCAPES = [
    "",
    "/",
    "..",
    ".",
    "../members/x",
    "a/../../members/x",
    "raw/../members/x",
    "insights/../../locks/datasets/x",
    "/mao/v1/members/x",
    "//mao",
    "a//b",
    "a/",
    "./a",
    "a/./b",
    "a/.hidden",
    "a..b",
    "%2e%2e/members",
    "%2E%2E%2Fmembers",
    "a\\b",
    "a b",
    "a\x00b",
    "a\nb",
    "-a",
    "_a",
    "ключ",
    "a/" * 4 + "b" * (MAX_KEY_LENGTH),
    "/".join(["s"] * (MAX_SEGMENTS + 1)),
    "k" * (MAX_KEY_LENGTH + 1),
]


@pytest.mark.parametrize("key", ESCAPES)
def test_every_escape_is_refused_for_every_route(key: str) -> None:
    with pytest.raises(BadRequest) as write_refused:
        write_key(key)
    assert write_refused.value.code in ("invalid_key",)
    for whole in (False, True):
        if key in ("",) and whole:
            continue
        with pytest.raises(BadRequest):
            read_keys(key, whole_namespace=whole)


@pytest.mark.parametrize("key", [None, 3, 1.5, True, ["a"], {"a": 1}])
def test_keys_must_be_strings(key: object) -> None:
    with pytest.raises(BadRequest):
        write_key(key)
    with pytest.raises(BadRequest):
        read_keys(key)


def test_bounds_are_inclusive() -> None:
    longest = "k" * MAX_KEY_LENGTH
    deepest = "/".join(["s"] * MAX_SEGMENTS)
    assert write_key(longest).etcd_key == "/mao/v1/raw/" + longest
    assert write_key(deepest).path == deepest
    assert key_problem("sensors/lab-1/temp_2.csv") is None


@pytest.mark.parametrize(
    "protected", ["members/fed-a", "locks/datasets/x", "tools/t", "datasets/d", "schedules/1", "audits/1"]
)
def test_names_of_other_namespaces_stay_inside_the_gateway(protected: str) -> None:
    # Not refused: confined. "members/fed-a" is just a raw entry of that name.
    assert write_key(protected).etcd_key == f"/mao/v1/raw/{protected}"
    assert write_key(f"raw/{protected}").etcd_key == f"/mao/v1/raw/{protected}"
    assert [k.etcd_key for k in read_keys(protected)] == [
        f"/mao/v1/insights/{protected}",
        f"/mao/v1/raw/{protected}",
    ]
    assert [k.etcd_key for k in read_keys(f"insights/{protected}")] == [f"/mao/v1/insights/{protected}"]


def test_every_accepted_key_maps_under_raw_or_insights() -> None:
    for key in ("a", "raw/a", "insights/a", "raw", "insights", "a/b/c", "raw/raw/x"):
        for candidate in read_keys(key, whole_namespace=True):
            assert candidate.etcd_key.startswith(("/mao/v1/raw/", "/mao/v1/insights/"))


def test_insights_cannot_be_written() -> None:
    with pytest.raises(BadRequest, match="published by pipeline steps"):
        write_key("insights/weather")


def test_whole_namespace_only_for_inspect() -> None:
    assert read_keys("raw", whole_namespace=True) == [GatewayKey("raw", "")]
    with pytest.raises(BadRequest):
        read_keys("raw")
    with pytest.raises(BadRequest):
        write_key("raw")


def test_etcd_keys_map_back() -> None:
    assert from_etcd_key("/mao/v1/raw/a/b").shown == "raw/a/b"  # type: ignore[union-attr]
    assert from_etcd_key("/mao/v1/insights/tool").shown == "insights/tool"  # type: ignore[union-attr]
    assert from_etcd_key("/mao/v1/members/x") is None
