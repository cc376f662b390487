"""The marketplace: federations to join, tools and pipelines to pick, in the prototype's JSON files.

``federations.json`` ``[{name, description, contacts}]``, ``tools.json`` ``[{name, author, image,
data_repo, code_repo, artefact, description}]`` and ``pipelines.json`` ``[{name, description, steps}]``
are read from ``MAO_MARKETPLACE`` (an http(s) URL or a local folder; default: this repository's
``marketplace/`` folder). Every entry is checked with the orchestrator's name rule, so a bad entry is
reported here, naming the file and the entry, instead of as a puzzling error later.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import requests

from executor.wire.names import name_problem

from .client import CtlError

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "marketplace"
# What POST /registry/tools takes (orchestrator.request_models.ToolRequest; a unit test keeps them equal).
# A marketplace entry may say more about a tool; only these fields are sent, as the API refuses others.
TOOL_FIELDS = ("name", "image", "author", "data_repo", "code_repo", "artefact", "description")
FETCH_TIMEOUT = 15.0


class MarketplaceError(CtlError):
    """The marketplace cannot be read, or one of its files is not what the format says."""


def location() -> str:
    return os.environ.get("MAO_MARKETPLACE") or str(DEFAULT_FOLDER)


class Marketplace:
    """One marketplace; each file is fetched and checked the first time it is needed."""

    def __init__(self, where: str | None = None) -> None:
        self.where = (where or location()).rstrip("/") or "/"
        self.is_url = self.where.startswith(("http://", "https://"))

    def file_location(self, filename: str) -> str:
        return f"{self.where}/{filename}" if self.is_url else str(Path(self.where).expanduser() / filename)

    def _load(self, filename: str) -> list[dict[str, Any]]:
        where = self.file_location(filename)
        text = self._fetch(where)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MarketplaceError(
                f"marketplace file {where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None
        if not isinstance(data, list):
            raise MarketplaceError(
                f"marketplace file {where} must hold a JSON list, not {type(data).__name__}"
            )
        return data

    def _fetch(self, where: str) -> str:
        if not self.is_url:
            path = Path(where)
            if not path.parent.is_dir():
                raise MarketplaceError(
                    f"no marketplace at {path.parent}: set MAO_MARKETPLACE to a marketplace folder or http(s) URL"
                )
            try:
                return path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise MarketplaceError(f"the marketplace has no {path.name} (looked for {path})") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise MarketplaceError(f"cannot read marketplace file {path}: {exc}") from None
        try:
            response = requests.get(where, timeout=FETCH_TIMEOUT)
        except requests.exceptions.RequestException as exc:
            raise MarketplaceError(
                f"cannot fetch marketplace file {where}: {type(exc).__name__} "
                "(check MAO_MARKETPLACE and the network)"
            ) from None
        if response.status_code != 200:
            raise MarketplaceError(f"cannot fetch marketplace file {where}: HTTP {response.status_code}")
        return response.text

    @cached_property
    def federations(self) -> list[dict[str, Any]]:
        return self._checked("federations.json", _check_federation)

    @cached_property
    def tools(self) -> list[dict[str, Any]]:
        return self._checked("tools.json", _check_tool)

    @cached_property
    def pipelines(self) -> list[dict[str, Any]]:
        return self._checked("pipelines.json", _check_pipeline)

    def tool(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.tools if t["name"] == name), None)

    def tool_registration(self, name: str) -> dict[str, Any] | None:
        """The body of ``POST /registry/tools`` for the marketplace's tool ``name`` (None: no such tool)."""
        tool = self.tool(name)
        if tool is None:
            return None
        return {k: v for k, v in tool.items() if k in TOOL_FIELDS and v is not None}

    def pipeline(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.pipelines if p["name"] == name), None)

    def _checked(self, filename: str, check: Any) -> list[dict[str, Any]]:
        entries = self._load(filename)
        seen: set[str] = set()
        for index, entry in enumerate(entries, start=1):
            label = f"entry {index}"
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                label += f" ({entry['name']!r})"
            problem = "not a JSON object" if not isinstance(entry, dict) else check(entry)
            if problem is None and entry["name"] in seen:
                problem = "its name is used by an earlier entry too"
            if problem:
                raise MarketplaceError(f"marketplace file {self.file_location(filename)}: {label}: {problem}")
            seen.add(entry["name"])
        return entries


def _str_fields(entry: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    for field in fields:
        if entry.get(field) is not None and not isinstance(entry[field], str):
            return f"{field} must be a string"
    return None


def _check_federation(entry: dict[str, Any]) -> str | None:
    if problem := name_problem(entry.get("name"), "federation name"):
        return problem
    contacts = entry.get("contacts", [])
    if not isinstance(contacts, list) or not all(isinstance(c, str) for c in contacts):
        return "contacts must be a list of e-mail addresses"
    return _str_fields(entry, ("description",))


def _check_tool(entry: dict[str, Any]) -> str | None:
    if problem := name_problem(entry.get("name"), "tool name"):
        return problem
    if not isinstance(entry.get("image"), str) or not entry["image"].strip():
        return "image is missing"
    return _str_fields(entry, ("author", "data_repo", "code_repo", "artefact", "description"))


def _check_pipeline(entry: dict[str, Any]) -> str | None:
    if problem := name_problem(entry.get("name"), "pipeline name"):
        return problem
    steps = entry.get("steps")
    if not isinstance(steps, list) or not steps:
        return "steps must be a non-empty list"
    for number, step in enumerate(steps, start=1):
        if problem := _step_problem(step):
            return f"step {number}: {problem}"
    return _str_fields(entry, ("description",))


def _step_problem(step: Any) -> str | None:
    if not isinstance(step, dict):
        return "not a JSON object"
    for field, required in (
        ("name", True),
        ("tool", True),
        ("output_dataset", True),
        ("input_dataset", False),
    ):
        value = step.get(field)
        if not required and value in (None, ""):
            continue
        if problem := name_problem(value, field.replace("_", " ")):
            return problem
    env = step.get("env")
    if env is not None and (
        not isinstance(env, dict) or not all(isinstance(v, str | int | float | bool) for v in env.values())
    ):
        return "env must be an object of strings (or null)"
    cmd = step.get("cmd")
    if cmd is not None and (not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd)):
        return "cmd must be a list of strings (or null)"
    if not isinstance(step.get("docker_socket", False), bool):
        return "docker_socket must be true or false"
    return None
