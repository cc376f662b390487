"""Every route the orchestrator's app registers is described in its OpenAPI document (a new route
without ``@doc`` fails here), and the document is valid OpenAPI 3.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_spec_validator import validate

from orchestrator.api.openapi import build_document, operation_of, routes_of
from orchestrator.app import create_app
from orchestrator.config import load_settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("data")
    settings = load_settings(
        {"MAO_EXECUTOR_TOKEN": "x" * 16, "MAO_DATA_DIR": str(data), "MAO_ETCD_INSECURE": "1"}
    )
    return create_app(settings)  # never started: nothing connects


def test_every_route_is_described(app) -> None:
    routes = routes_of(app)
    assert len(routes) > 40
    missing = [f"{method} {path}" for method, path, handler in routes if operation_of(handler) is None]
    assert missing == [], "add @doc(...) under the route decorator of: " + ", ".join(missing)
    document = build_document(app)
    for method, path, _ in routes:
        assert method.lower() in document["paths"][path], (method, path)


def test_document_is_openapi_3_1(app) -> None:
    document = build_document(app)
    validate(document)
    assert document["openapi"] == "3.1.0"
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_request_models_are_the_handlers_models(app) -> None:
    schemas = build_document(app)["components"]["schemas"]
    # The same pydantic models the handlers parse with: a step's fields come from orchestrator.domain.pipeline.Step.
    assert {"name", "tool", "output_dataset", "private_env", "timeout"} <= set(schemas["Step"]["properties"])
    assert schemas["RunRequest"]["properties"]["wait"]["type"] == "boolean"


def test_static_files_exist() -> None:
    from orchestrator.api.browser import FILES, UI_DIR

    for name in FILES:
        assert (UI_DIR / name).is_file(), name
    scripts = Path(UI_DIR / "index.html").read_text().count("<script")
    assert scripts == len([name for name in FILES if name.endswith(".js") and name != "docs.js"])
