"""Request models are strict (an unknown field is an error naming it), the stored models they share
their fields with stay tolerant (etcd and the database may hold fields another version wrote), and the
prototype's payloads still parse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ctl.marketplace import TOOL_FIELDS, Marketplace
from executor.wire.models import KillRequest
from orchestrator.api.common import parse
from orchestrator.api.openapi import build_document, operation_of, routes_of
from orchestrator.app import create_app
from orchestrator.config import load_settings
from orchestrator.domain.pipeline import Dataset, Pipeline, Query, Tool
from orchestrator.errors import BadRequest
from orchestrator.request_models import DatasetRequest, NoBody, PipelineRequest, ToolRequest

STEP = {
    "name": "acquisition",
    "tool": "busybox",
    "env": {"DEMO_TOOL_ENV": "foo.bar.env"},
    "cmd": ["sh", "-c", "sleep 10"],
    "docker_socket": False,
    "input_dataset": None,
    "output_dataset": "some-dataset",
}
# What the prototype's clients send (its README's curl samples, its maoctl and its installer).
PROTOTYPE_TOOL = {
    "name": "performancetool",
    "author": "Panos",
    "image": "panosece/pybench",
    "data_repo": "https://example.org/observatory/systemperformance",
    "code_repo": "...",
    "artefact": "system",
    "description": "A small benchmark.",
}
PROTOTYPE_CLI_TOOL = {
    **{k: None for k in ("author", "data_repo", "code_repo", "artefact")},
    "name": "t",
    "image": "i",
}
PROTOTYPE_DATASET = {"name": "name-of-dataset", "body": {"master": "git-link", "nodes": []}}
PROTOTYPE_PIPELINE = {"name": "pipeline1", "steps": [STEP]}
PROTOTYPE_CLI_PIPELINE = {
    "name": "p",
    "description": "Pipeline to evaluate system performance",
    "steps": [{**STEP, "cmd": [], "env": {}, "input_dataset": None}],
}


def unknown_fields(model: type[BaseModel], data: Any) -> list[str]:
    with pytest.raises(BadRequest) as caught:
        parse(model, data)
    assert caught.value.status == 400 and caught.value.code == "invalid_request"
    fields: list[str] = caught.value.extra["unknown_fields"]
    for field in fields:
        assert f"{field}: unknown field" in caught.value.message
    return fields


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (ToolRequest, PROTOTYPE_TOOL),
        (ToolRequest, PROTOTYPE_CLI_TOOL),
        (DatasetRequest, PROTOTYPE_DATASET),
        (DatasetRequest, {"name": "d", "master": "/srv/repos/d.git", "nodes": ["s-a"]}),
        (PipelineRequest, PROTOTYPE_PIPELINE),
        (PipelineRequest, PROTOTYPE_CLI_PIPELINE),
    ],
)
def test_the_prototypes_payloads_parse(model: type[BaseModel], data: dict[str, Any]) -> None:
    model.model_validate(data)


@pytest.mark.parametrize(
    ("model", "data", "unknown"),
    [
        (ToolRequest, {**PROTOTYPE_TOOL, "imgae": "x"}, ["imgae"]),
        (
            ToolRequest,
            {**PROTOTYPE_TOOL, "instances": [], "federation_registered": True},
            ["instances", "federation_registered"],
        ),
        (DatasetRequest, {**PROTOTYPE_DATASET, "colour": "red"}, ["colour"]),
        (DatasetRequest, {"name": "d", "body": {"master": "m", "nodez": []}}, ["body.nodez"]),
        (DatasetRequest, {"name": "d", "master": "m", "url": "m"}, ["url"]),
        (PipelineRequest, {**PROTOTYPE_PIPELINE, "instance_scheduled": True}, ["instance_scheduled"]),
        (PipelineRequest, {**PROTOTYPE_PIPELINE, "steps": [{**STEP, "retires": 3}]}, ["steps.0.retires"]),
        (NoBody, {"force": True}, ["force"]),
    ],
)
def test_unknown_fields_are_errors_naming_them(model: type[BaseModel], data: Any, unknown: list[str]) -> None:
    assert unknown_fields(model, data) == unknown


def test_stored_models_ignore_what_they_do_not_know() -> None:
    # etcd values carry more than a request (a pipeline registration's instances; a newer version's fields).
    assert Tool.model_validate({**PROTOTYPE_TOOL, "added_by": "b"}).name == "performancetool"
    stored = Dataset.model_validate({"name": "d", "master": "m", "nodes": [], "locked_by": "b"})
    assert stored.nodes == []
    registration = {**PROTOTYPE_PIPELINE, "instances": ["a", "b"], "registered_by": "a", "updated_at": "now"}
    assert Pipeline.model_validate(registration).name == "pipeline1"
    with pytest.raises(ValidationError):
        PipelineRequest.model_validate(registration)


def test_requests_are_the_stored_models_with_one_rule_changed() -> None:
    # One source of truth for fields and validators: the request is a Tool / Pipeline.
    assert issubclass(ToolRequest, Tool) and issubclass(PipelineRequest, Pipeline)
    assert ToolRequest.model_fields.keys() == Tool.model_fields.keys()
    # ...and the version it was read at (a compare-and-set, never part of the definition).
    assert set(PipelineRequest.model_fields) == set(Pipeline.model_fields) | {"version"}
    assert set(DatasetRequest.model_fields) - {"body"} == set(Dataset.model_fields)
    assert ToolRequest.model_config["extra"] == "forbid" and Tool.model_config["extra"] == "ignore"
    # The same validators run: a bad image or name is refused by both.
    for model in (Tool, ToolRequest):
        with pytest.raises(ValidationError):
            model.model_validate({"name": "t", "image": "--privileged"})


def test_dataset_request_forms() -> None:
    assert DatasetRequest.model_validate(PROTOTYPE_DATASET).dataset() == Dataset(
        name="name-of-dataset", master="git-link", nodes=[]
    )
    flat = DatasetRequest.model_validate({"name": "d", "master": "/srv/d.git"}).dataset()
    assert flat.nodes == [] and flat.master == "/srv/d.git"
    for bad in (
        {"name": "d"},
        {"name": "d", "master": "m", "body": {"master": "m"}},
        {"name": "d", "nodes": [], "body": {"master": "m"}},
        {"name": "d", "body": {"nodes": []}},
        {"name": "d", "body": "master"},
        {"name": "d", "body": {"master": "-uevil"}},
    ):
        with pytest.raises(BadRequest) as caught:
            parse(DatasetRequest, bad)
        assert "body: body" not in caught.value.message and caught.value.message


def test_no_body_takes_nothing() -> None:
    parse(NoBody, {})


def test_marketplace_sends_only_what_the_tool_route_takes() -> None:
    assert set(TOOL_FIELDS) == set(ToolRequest.model_fields)


def test_executor_kill_step_is_a_name() -> None:
    KillRequest(run="abc", step="collect")
    for bad in ("../x", "-x", "a b", ""):
        with pytest.raises(ValidationError):
            KillRequest(run="abc", step=bad)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> web.Application:
    data = tmp_path_factory.mktemp("data")
    settings = load_settings(
        {"MAO_EXECUTOR_TOKEN": "x" * 16, "MAO_DATA_DIR": str(data), "MAO_ETCD_INSECURE": "1"}
    )
    return create_app(settings)  # never started: nothing connects


def _objects(schema: Any, components: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object schema with declared properties reachable from ``schema``."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen:
                    seen.add(name)
                    walk(components[name])
                return
            if node.get("type") == "object" and "properties" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def test_every_request_body_is_strict_and_every_query_tolerant(app: web.Application) -> None:
    """The rule, route by route: a body model forbids unknown fields (the document says
    additionalProperties false, at every level a model defines); a query model ignores them."""
    document = build_document(app)
    components = document["components"]["schemas"]
    bodies = 0
    for method, path, handler in routes_of(app):
        op = operation_of(handler)
        assert op is not None
        if method in ("POST", "PUT", "PATCH"):
            # Every write says what it takes (NoBody when nothing), so none ignores fields by omission;
            # a write whose body is not JSON (a tarball: raw_body) names its content type instead.
            assert op.body is not None or op.raw_body is not None, (
                f"{method} {path}: give @doc a body= request model (NoBody if none)"
            )
        if op.body is not None:
            assert op.body.model_config.get("extra") == "forbid", (method, path, op.body)
            schema = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]
            objects = _objects(schema["schema"], components)
            assert objects, (method, path)
            for obj in objects:
                assert obj.get("additionalProperties") is False, (method, path, obj.get("title"))
            bodies += 1
        if op.query is not None:
            assert issubclass(op.query, Query), (method, path)
    assert bodies >= 13


def test_a_marketplace_tool_is_registered_with_the_routes_fields_only(tmp_path: Path) -> None:
    entry = {**PROTOTYPE_TOOL, "author": None, "tags": ["bench"], "license": "MIT"}
    (tmp_path / "tools.json").write_text(json.dumps([entry]))
    registration = Marketplace(str(tmp_path)).tool_registration("performancetool")
    assert registration is not None
    assert set(registration) == set(TOOL_FIELDS) - {"author"}
    ToolRequest.model_validate(registration)
    assert Marketplace(str(tmp_path)).tool_registration("nope") is None
