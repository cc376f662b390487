"""What every handler shares: reading a JSON body, validating it, answering JSON (the services a
handler may use come from its area's facade, api/facades.py)."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from executor.wire.names import name_problem

from ..errors import BadRequest
from ..node import Node

NODE: web.AppKey[Node] = web.AppKey("node", Node)  # the app's lifecycle only: handlers use a facade
M = TypeVar("M", bound=BaseModel)


async def read_json(request: web.Request, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it. ``optional``: no
    body at all counts as ``{}`` (a write that takes no fields)."""
    try:
        raw = await request.read()
        body = json.loads(raw) if raw.strip() else ({} if optional else None)
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # e.g. 1,000 nested arrays: not a ValueError, but bad input all the same
        raise BadRequest("the request body is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    return body


def parse(model: type[M], data: Any, codes: dict[str, str] | None = None) -> M:
    """``data`` validated by ``model``, or a 400. ``codes`` maps a top-level field to the error code
    a wrong value of it gets (``invalid_request`` otherwise, and always for a missing field). Unknown
    fields (strict request models) are named in the message and listed in ``unknown_fields``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        code = "invalid_request"
        first = exc.errors()[0] if exc.error_count() else None
        if first and codes and first["type"] not in ("missing", EXTRA) and first["loc"]:
            code = codes.get(str(first["loc"][0]), code)
        error = BadRequest(describe_validation_error(exc), code=code)
        if unknown := [_where(e["loc"]) for e in exc.errors() if e["type"] == EXTRA]:
            error.extra["unknown_fields"] = unknown
        raise error from None


EXTRA = "extra_forbidden"  # pydantic's error type for a field the model does not have


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:10]:
        where = _where(error["loc"])
        if error["type"] == EXTRA:
            message = "unknown field (check its spelling; GET /openapi.json lists the fields)"
        else:
            message = error["msg"].removeprefix("Value error, ")
        # A rule over several fields (a model validator) has no location: its message names them.
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def path_name(request: web.Request, key: str = "name", what: str = "name") -> str:
    value = request.match_info[key]
    if problem := name_problem(value, what):
        raise BadRequest(problem, code="invalid_name")
    return value


ID_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")  # a run's, a schedule's or a backfill's id


def path_id(request: web.Request, key: str = "id") -> str:
    value = request.match_info[key]
    if not ID_RE.fullmatch(value):
        raise BadRequest(f"invalid id {value[:80]!r}", code="invalid_id")
    return value


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)
