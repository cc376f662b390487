"""Fuzzing the JSON routes with hypothesis: whatever the body, the answer is never a 500 and never a
traceback, and every error is ``{"error", "message"}``. Bounded (a few dozen examples per route) so
it stays fast; it will give way to schemathesis over the OpenAPI document once there is one.

The bodies that reach the calendar and the engine's limits (backfill spans, priorities, cron and time
zones, a step's ``cpus``/``memory``/``timeout``) are generated against a pipeline that exists, so
they get past the 404 to the arithmetic (``test_backfill_bodies_of_an_existing_pipeline``,
``test_init_bodies_with_the_engines_limits``): every answer is a 2xx or a JSON 4xx, and a step init
accepts is one the executor would run.

Left out on purpose: ``POST /federation/etcd-members`` (a lucky body would add a member to the
session's etcd cluster) and ``DELETE`` routes (they would remove what other tests registered).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api import Api, unique

from .conftest import Node

FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible, never flaky
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["x", "a-b", "../x", "", "-x", "a" * 200, "é", "a.lock", "fuzz"]) | st.text(
    max_size=16
)
step_fields = ["name", "tool", "input_dataset", "output_dataset", "env", "cmd", "docker_socket", "timeout"]
# Integers past any bound (and past 64 bits), floats down to the smallest subnormal.
big_ints = st.integers() | st.sampled_from([-(2**63), 2**63, 10**30, -1001, 1001, -1000, 1000])
numbers = (
    big_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-9, 5e-324, 0.001, 0.0099999, 0.01, 1e308, -0.5])
)
steps = st.lists(
    st.fixed_dictionaries(
        {}, optional={f: names if f in ("name", "tool") else json_values for f in step_fields}
    ),
    max_size=3,
)

ROUTES: dict[str, dict[str, Any]] = {
    "/registry/tools": {
        "name": names,
        "image": st.text(max_size=30) | json_values,
        **{f: json_values for f in ("author", "data_repo", "code_repo", "artefact", "description")},
    },
    "/registry/datasets": {"name": names, "body": json_values, "master": json_values, "nodes": json_values},
    "/bare-repo/init": {"name": names.map(lambda n: f"fuzz-{n}") | json_values},
    "/pipeline/init": {"name": names, "description": json_values, "steps": steps | json_values},
    "/pipeline/run": {
        "name": names,
        "wait": json_values,
        "cron": json_values,
        "timezone": json_values,
        "priority": numbers | json_values,
        "overlap": json_values,
        "catchup": json_values,
        "catchup_window": numbers | json_values,
        "scope": json_values,
        "trigger": json_values,
    },
    "/pipeline/backfill": {
        "name": names,
        "from": json_values,
        "to": json_values,
        "cron": json_values,
        "priority": numbers | json_values,
        "dry_run": json_values,
    },
    "/write": {
        "key": st.text(max_size=40).map(lambda k: f"raw/fuzz/{k}") | json_values,
        "value": json_values,
    },
    "/read": {"key": st.text(max_size=40) | json_values},
    "/inspect": {"key": st.text(max_size=40) | json_values},
    "/gateway/keys": {"name": names.map(lambda n: f"fuzz-{n}") | json_values},
    "/audits": {"dataset": names, "file": json_values, "wait": json_values},
}


def check(response: Any) -> None:
    assert response.status_code < 500 or response.status_code in (502, 503), (
        response.status_code,
        response.text[:500],
    )
    assert "Traceback" not in response.text
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_json_routes_never_answer_500(sqlite_node: Node, route: str) -> None:
    api: Api = sqlite_node.api
    fields = ROUTES[route]

    @FUZZ
    @given(body=st.fixed_dictionaries({}, optional=fields) | json_values)
    def post(body: Any) -> None:
        check(api.post(route, body))

    post()


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_bodies_that_are_not_json(sqlite_node: Node, raw: bytes) -> None:
    check(sqlite_node.api.post("/registry/tools", data=raw))


@FUZZ
@given(name=st.text(min_size=1, max_size=40))
def test_names_in_paths(sqlite_node: Node, name: str) -> None:
    api = sqlite_node.api
    for path in ("/registry/tools/", "/registry/datasets/", "/registry/pipelines/", "/pipeline/", "/runs/"):
        check(api.get(path + quote(name, safe="")))
    check(api.get("/runs", pipeline=name, status=name, limit=name))


# Instants across the whole calendar, with offsets up to the widest a parser accepts (+-23:59).
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=offsets),
    st.datetimes(min_value=datetime(9999, 12, 30), timezones=offsets),  # the end of the calendar
    st.datetimes(min_value=datetime(9998, 12, 31), max_value=datetime(9999, 1, 2), timezones=offsets),
    st.datetimes(max_value=datetime(1, 1, 2), timezones=offsets),  # and its start
    st.datetimes(),  # no offset: a 400 of its own
).map(lambda moment: moment.isoformat())
crons = st.sampled_from(
    ["* * * * *", "0 * * * *", "0 0 1 1 *", "0 0 29 2 *", "30 2 * * 0", "0 0 31 2 *"]
) | st.text(max_size=20)
zones = st.sampled_from(
    ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Zurich", "Nope/Nowhere"]
) | st.text(max_size=12)


@pytest.fixture(scope="module")
def fuzz_pipeline(sqlite_node: Node) -> Iterator[tuple[str, str, str]]:
    """A pipeline that exists (pipeline, tool, dataset), so the generated bodies reach the arithmetic."""
    api: Api = sqlite_node.api
    tool, dataset, pipeline = unique("fuzz-tool"), unique("fuzz-ds"), unique("fuzz-pipe")
    api.tool(tool)
    api.local_dataset(dataset)
    step = {"name": "s", "tool": tool, "output_dataset": dataset, "cmd": ["true"]}
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    yield pipeline, tool, dataset


@settings(FUZZ, max_examples=80)
@given(start=instants, end=instants, cron=crons, zone=zones, priority=st.none() | numbers)
def test_backfill_bodies_of_an_existing_pipeline(
    sqlite_node: Node,
    fuzz_pipeline: tuple[str, str, str],
    start: str,
    end: str,
    cron: str,
    zone: str,
    priority: Any,
) -> None:
    """Spans anywhere in the calendar (its last day included), any cron, zone and priority: the ticks
    (a dry run: nothing is queued) or a 400, never a 500."""
    body: dict[str, Any] = {
        "name": fuzz_pipeline[0],
        "from": start,
        "to": end,
        "cron": cron,
        "timezone": zone,
    }
    if priority is not None:
        body["priority"] = priority
    response = sqlite_node.api.post("/pipeline/backfill", {**body, "dry_run": True})
    check(response)
    assert response.status_code in (200, 400), response.text


def test_backfill_at_the_ends_of_the_calendar_is_a_400(
    sqlite_node: Node, fuzz_pipeline: tuple[str, str, str]
) -> None:
    api: Api = sqlite_node.api
    name = fuzz_pipeline[0]
    for start, end in (
        ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59Z"),
        ("9998-12-31T00:00:00Z", "9999-12-31T23:59:59-05:00"),
        ("0001-01-01T00:00:00+05:00", "0001-01-02T00:00:00Z"),
    ):
        for dry_run in (True, False):
            body = {"name": name, "from": start, "to": end, "cron": "0 * * * *", "dry_run": dry_run}
            response = api.post("/pipeline/backfill", body)
            check(response)
            assert response.status_code == 400 and "calendar" in response.json()["message"], response.text
    # The last hours of the last year allowed still answer their ticks.
    last = {"name": name, "from": "9998-12-31T20:00:00Z", "to": "9998-12-31T23:59:59Z", "cron": "0 * * * *"}
    ticks = api.ok(
        api.post("/pipeline/backfill", {**last, "timezone": "Pacific/Kiritimati", "dry_run": True})
    )
    assert ticks["count"] == 4, ticks


@FUZZ
@given(
    limits=st.fixed_dictionaries(
        {},
        optional={
            "cpus": numbers | json_values,
            "memory": numbers | st.sampled_from(["1k", "6m", "5.9m", "1p", "2p", "0"]) | json_values,
            "timeout": numbers | json_values,
            "retries": numbers | json_values,
            "retry_delay": numbers | json_values,
            "stall_timeout": numbers | json_values,
        },
    )
)
def test_init_bodies_with_the_engines_limits(
    sqlite_node: Node, fuzz_pipeline: tuple[str, str, str], limits: dict[str, Any]
) -> None:
    """A step's limits: init answers 200 only for values the executor accepts (it is asked, as at
    each run), otherwise a 400; never a 500."""
    _, tool, dataset = fuzz_pipeline
    step = {"name": "s", "tool": tool, "output_dataset": dataset, "cmd": ["true"], **limits}
    response = sqlite_node.api.post("/pipeline/init", {"name": unique("fuzz-limits"), "steps": [step]})
    check(response)
    assert response.status_code in (200, 400), response.text


def test_cpus_below_what_the_engine_runs_are_refused_at_init(
    sqlite_node: Node, fuzz_pipeline: tuple[str, str, str]
) -> None:
    """Docker refuses less than 0.01 CPU (NanoCPUs 10,000,000): such a step could never start."""
    api: Api = sqlite_node.api
    _, tool, dataset = fuzz_pipeline
    for cpus, status in ((1e-9, 400), (0.0099, 400), (0, 400), (0.01, 200), (2.5, 200)):
        step = {"name": "s", "tool": tool, "output_dataset": dataset, "cmd": ["true"], "cpus": cpus}
        response = api.post("/pipeline/init", {"name": unique("fuzz-cpus"), "steps": [step]})
        assert response.status_code == status, (cpus, response.text)
        if status == 400:
            assert "cpus" in response.json()["message"], response.text
