"""The OpenAPI 3.1 document (``GET /openapi.json``), generated from the routes the app registers and the
pydantic models their handlers validate with.

Documenting a route is one line: ``@doc(...)`` under its ``@routes.get/post/...``, naming its summary,
request body model, query model and answer type. The models are the ones the handler parses with
(``common.parse``), so the document and the validation cannot drift apart; answer types are pydantic
models or plain types (``list[str]``). A route without ``@doc`` still appears (the generator walks the
app's router), marked ``x-undocumented``, and tests/unit/test_openapi_routes.py fails on it. A write
(POST/PUT/PATCH) names its body model, ``NoBody`` when it takes no fields; body models are strict, so
the document says ``additionalProperties: false`` (tests/unit/test_request_models.py checks both).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from .. import __version__
from .schemas import Error

F = TypeVar("F", bound=Callable[..., Any])

# Statuses every route can answer besides its own (the error middleware's and the auth middleware's).
COMMON_ERRORS = {401: "missing or wrong token", 500: "internal error (a bug; see the log)"}
# The access middleware's guards (orchestrator/access.py), answered before any handler, public pages
# included: a foreign Host name, and a write that is not JSON.
GUARD_ERRORS = {421: "a Host name this API does not answer to (MAO_API_HOSTNAMES)"}
WRITE_ERRORS = {415: "the body is not Content-Type: application/json"}
ERROR_TEXT = {
    400: "bad input",
    403: "a gateway key outside the gateway's routes, a page of another site (Origin), or a "
    "registration another instance owns (not_owner)",
    404: "not found",
    409: "conflict",
    413: "too large",
    429: "too many requests",
    502: "a value in etcd that does not check out (malformed, or not sealed by its writer)",
    503: "a backing service (etcd, database, executor, git) is unreachable",
}
_PARAM_RE = re.compile(r"{([^}:]+)(?::[^}]*)?}")


@dataclass(frozen=True)
class Operation:
    summary: str
    body: type[BaseModel] | None = None
    body_required: bool = True  # False: the body may be left out (a write that takes no fields)
    query: type[BaseModel] | None = None
    answer: Any = None  # a pydantic model or any type TypeAdapter takes; None: no JSON body
    status: int = 200
    more: tuple[tuple[int, Any], ...] = ()  # other success statuses and their answers
    errors: tuple[int, ...] = (400, 503)
    content_type: str = "application/json"
    public: bool = False  # served without a token (static pages)
    staging: bool = False  # an attempt's single-use staging ticket instead of the API token (api/staging.py)
    raw_body: str | None = None  # a body that is not JSON: its content type (a tarball)
    tags: tuple[str, ...] = field(default_factory=tuple)


_OPERATIONS: dict[Callable[..., Any], Operation] = {}


def doc(summary: str, **details: Any) -> Callable[[F], F]:
    """Describe the decorated handler in the OpenAPI document (see ``Operation`` for ``details``)."""

    def mark(handler: F) -> F:
        _OPERATIONS[handler] = Operation(summary, **details)
        return handler

    return mark


def operation_of(handler: Callable[..., Any]) -> Operation | None:
    return _OPERATIONS.get(handler)


def routes_of(app: web.Application) -> list[tuple[str, str, Callable[..., Any]]]:
    """(method, path template, handler) of every route the app serves (HEAD twins of GETs left out)."""
    found = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path:
            found.append((route.method, _PARAM_RE.sub(r"{\1}", path), route.handler))
    return found


def build_document(app: web.Application) -> dict[str, Any]:
    routes = routes_of(app)
    adapters: list[tuple[Any, Any, TypeAdapter[Any]]] = []
    for _, _, handler in routes:
        op = operation_of(handler)
        if op is None:
            continue
        types = [("validation", op.body), ("serialization", op.answer)]
        types += [("serialization", answer) for _, answer in op.more]
        for kind, tp in types:
            if tp is not None:
                adapters.append(((kind, _key(tp)), kind, TypeAdapter(tp)))
    adapters.append((("serialization", "Error"), "serialization", TypeAdapter(Error)))
    unique = {key: (key, mode, adapter) for key, mode, adapter in adapters}
    schemas_by_key, defs = TypeAdapter.json_schemas(
        list(unique.values()), ref_template="#/components/schemas/{model}"
    )
    components = dict(defs.get("$defs", {}))

    def schema(kind: str, tp: Any) -> dict[str, Any]:
        return schemas_by_key[((kind, _key(tp)), kind)]  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in sorted(routes, key=lambda r: (r[1], r[0])):
        op = operation_of(handler)
        entry: dict[str, Any]
        if op is None:
            entry = {"summary": handler.__name__, "x-undocumented": True, "responses": {"default": {
                "description": "not described"}}}  # fmt: skip
        else:
            entry = _operation(method, path, handler, op, schema)
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MAO orchestrator API",
            "version": __version__,
            "description": "One instance of a MAO federation: registries, pipelines, runs, schedules, "
            "the federation, the gateway and audits. Errors are `{error, message}` with the status.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "MAO_API_TOKEN"},
                "staging": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an attempt's single-use staging ticket (fetch data mode): held only "
                    "by that attempt's staging containers, accepted once and until it expires",
                },
            },
        },
    }


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``#/$defs/X`` reference replaced by the definition itself."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            return _inline({**defs[ref[8:]], **{k: v for k, v in schema.items() if k != "$ref"}}, defs)
        return {key: _inline(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _operation(
    method: str, path: str, handler: Callable[..., Any], op: Operation, schema: Callable[[str, Any], Any]
) -> dict[str, Any]:
    operation_id = f"{handler.__module__.rsplit('.', 1)[-1]}.{handler.__name__}"
    entry: dict[str, Any] = {"operationId": operation_id, "summary": op.summary}
    if op.tags:
        entry["tags"] = list(op.tags)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
        for name in _PARAM_RE.findall(path)
    ]
    if op.query is not None:
        # Query models are flat (strings, numbers, enums): their properties become the parameters,
        # an enum's definition inlined (a parameter cannot point into the model's own $defs).
        query_schema = op.query.model_json_schema(mode="validation")
        defs = query_schema.get("$defs", {})
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": _inline(prop, defs)}
            )
    if parameters:
        entry["parameters"] = parameters
    if op.raw_body is not None:
        entry["requestBody"] = {
            "required": True,
            "content": {op.raw_body: {"schema": {"type": "string", "contentMediaType": op.raw_body}}},
        }
    elif op.body is not None:
        entry["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schema("validation", op.body)}},
        }
    success: dict[str, Any] = {"description": "success"}
    if op.answer is not None:
        success["content"] = {op.content_type: {"schema": schema("serialization", op.answer)}}
    elif op.content_type != "application/json":
        success["content"] = {op.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.status): success}
    for status, answer in op.more:
        responses[str(status)] = {
            "description": "success",
            "content": {"application/json": {"schema": schema("serialization", answer)}},
        }
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    statuses = set(op.errors) | set(GUARD_ERRORS) | (set() if op.public else set(COMMON_ERRORS))
    if method in ("POST", "PUT", "PATCH") and op.raw_body is None:
        statuses |= set(WRITE_ERRORS)
    for status in sorted(statuses):
        text = ERROR_TEXT.get(status) or {**COMMON_ERRORS, **GUARD_ERRORS, **WRITE_ERRORS}.get(status, "error")
        responses[str(status)] = {"description": text, "content": error_ref}
    entry["responses"] = responses
    if op.public:
        entry["security"] = []
    elif op.staging:
        entry["security"] = [{"staging": []}]
    return entry


def _key(tp: Any) -> str:
    return repr(tp)  # "list[Run]" and "<class '...Run'>" differ; list[Run].__name__ is just "list"
