"""``POST /pipeline/run``'s body becomes one action (run now, schedule, arm a trigger) exactly as the
handler decided before the union existed: every generated body that was accepted leads to the same
action with the same settings, every one refused is refused with the same code."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.wire.names import name_problem
from orchestrator.api.common import parse
from orchestrator.errors import BadRequest
from orchestrator.scheduling.requests import (
    ArmTrigger,
    RunNow,
    RunRequest,
    ScheduleRun,
    action_of,
    check_overlap,
)

SCOPES = ("instance", "federation")


def before(body: RunRequest) -> tuple[str, dict[str, Any]]:
    """The handler's decision before ``action_of`` (commit a8be14e's ``run_pipeline``, its checks in
    their order, the services' overlap checks included): ``(what, settings)`` or ``("error", code)``."""
    name = body.name
    if problem := name_problem(name, "pipeline name"):
        raise BadRequest(problem, code="invalid_name")
    cron = body.cron
    if body.version is not None and (body.trigger is not None or cron not in (None, "")):
        raise BadRequest("version", code="not_supported")
    scope = body.scope or "instance"
    if scope not in SCOPES:
        raise BadRequest("scope", code="invalid_scope")
    if body.placement is not None and scope != "federation":
        raise BadRequest("placement", code="invalid_placement")
    if body.trigger is not None:
        if cron not in (None, ""):
            raise BadRequest("both", code="invalid_request")
        overlap = check_overlap(body.overlap, federation=scope == "federation")
        return "trigger", {
            "name": name, "dataset": body.trigger.dataset, "scope": scope, "placement": body.placement,
            "overlap": overlap, "priority": body.priority or 0,
        }  # fmt: skip
    if scope == "federation" and cron in (None, ""):
        raise BadRequest("cron", code="invalid_cron")
    if cron not in (None, ""):
        timezone = body.timezone or "UTC"
        if scope == "federation":
            return "schedule", {
                "name": name, "cron": cron, "timezone": timezone, "scope": scope, "placement": body.placement,
                "overlap": check_overlap(body.overlap, federation=True), "catchup": body.catchup,
                "catchup_window": body.catchup_window, "priority": body.priority or 0,
            }  # fmt: skip
        return "schedule", {
            "name": name, "cron": cron, "timezone": timezone, "scope": scope, "add": body.add,
            "overlap": check_overlap(body.overlap), "catchup": body.catchup,
            "catchup_window": body.catchup_window, "priority": body.priority or 0,
        }  # fmt: skip
    policy = check_overlap(body.overlap)
    return "now", {
        "name": name, "wait": body.wait, "overlap": policy, "priority": body.priority or 0,
        "version": body.version,
    }  # fmt: skip


def after(body: RunRequest) -> tuple[str, dict[str, Any]]:
    action = action_of(body)
    if isinstance(action, ArmTrigger):
        return "trigger", action.model_dump(exclude={"kind"})
    if isinstance(action, ScheduleRun):
        fields = {"add"} if action.scope == "federation" else {"placement"}
        return "schedule", action.model_dump(exclude={"kind", *fields})
    assert isinstance(action, RunNow)
    return "now", action.model_dump(exclude={"kind"})


def decided(how: Any, body: RunRequest) -> tuple[str, Any]:
    try:
        return how(body)
    except BadRequest as exc:
        return "error", exc.code


ODD = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.just(""), st.just([]), st.just({}))
# Values of the right type, mostly; an odd one (``ODD``) now and then.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(["p", "my-pipeline", "../p", "a b", "x" * 200]),
    "cron": st.sampled_from(["* * * * *", "0 3 * * *", "bad", " ", ""]),
    "timezone": st.sampled_from(["UTC", "Europe/Zurich", "Mars/Base"]),
    "scope": st.sampled_from(["instance", "federation", "galaxy", ""]),
    "placement": st.just({"labels": {"gpu": "yes"}}),
    "wait": st.booleans(),
    "add": st.booleans(),
    "overlap": st.sampled_from(["skip", "replace", "queue", "allow", "sometimes"]),
    "catchup": st.sampled_from(["none", "latest", "all", "most"]),
    "catchup_window": st.sampled_from([60, 366 * 86400 + 1]),
    "trigger": st.sampled_from([{"dataset": "raw"}, {"dataset": "../x"}, {"data": "raw"}]),
    "priority": st.sampled_from([5, -5, 10**9]),
    "version": st.sampled_from([1, 7, 0]),
    "wiat": st.booleans(),
}


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=7))
    body = {key: draw(ODD if draw(st.integers(0, 9)) == 0 else FIELDS[key]) for key in chosen}
    if draw(st.integers(0, 3)):  # mostly well-named, so the later checks are reached too
        body["name"] = "p"
    return body


@settings(max_examples=1000, deadline=None)
@given(bodies())
def test_every_body_is_classified_as_before(body: dict[str, Any]) -> None:
    try:
        request = parse(RunRequest, body)
    except BadRequest as exc:  # the flat model is unchanged: refused before either classification
        assert exc.code == "invalid_request"
        return
    assert decided(after, request) == decided(before, request)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"name": "p"}, "now"),
        ({"name": "p", "cron": ""}, "now"),  # the prototype's "cron omitted = run now", also empty
        ({"name": "p", "cron": "* * * * *"}, "schedule"),
        ({"name": "p", "cron": "* * * * *", "scope": "federation"}, "schedule"),
        ({"name": "p", "trigger": {"dataset": "raw"}}, "trigger"),
    ],
)
def test_the_prototype_bodies_and_each_kind(body: dict[str, Any], kind: str) -> None:
    assert action_of(parse(RunRequest, body)).kind == kind
