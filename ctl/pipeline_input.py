"""Building a pipeline definition for ``pipeline add``: from a file, or by asking step by step.

Plain click prompts (not questionary) so the same questions also work with answers piped on stdin.
Private variables (an env value of exactly ``{{ MAO_PRIVATE_VARIABLE }}``) are asked with hidden input
and sent in the step's write-only ``private_env``; the placeholder stays in ``env``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click

from executor.wire.names import name_problem

from .safe_text import clean

# Must equal orchestrator.domain.pipeline.PRIVATE_PLACEHOLDER (a unit test checks); that module needs pydantic.
PRIVATE_PLACEHOLDER = "{{ MAO_PRIVATE_VARIABLE }}"


def load_structured_file(path: Path) -> Any:
    """A JSON or YAML file's content; an unreadable or malformed file is one clear error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"{path} is not valid YAML: {_yaml_where(exc)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def _yaml_where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)


def pipeline_from_file(path: Path) -> dict[str, Any]:
    data = load_structured_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise click.BadParameter(
            f"{path} must hold one pipeline: an object with name, description and a list of steps"
        )
    return data


def private_keys(step: dict[str, Any]) -> list[str]:
    env = step.get("env") or {}
    return (
        [key for key, value in env.items() if value == PRIVATE_PLACEHOLDER] if isinstance(env, dict) else []
    )


def ask_private_values(pipeline: dict[str, Any]) -> None:
    """Ask (hidden) for every private variable without a value yet; store it in ``private_env``."""
    for step in pipeline.get("steps", []):
        if not isinstance(step, dict):
            continue
        for key in private_keys(step):
            private = step.setdefault("private_env", {}) or {}
            if private.get(key):
                continue
            private[key] = click.prompt(
                f"Private value for {step.get('name')}.{key} (kept on this instance only)",
                hide_input=True,
                err=True,
                value_proc=_not_empty,
            )
            step["private_env"] = private


def _not_empty(value: str) -> str:
    if not value.strip():
        raise click.UsageError("a value is needed")
    return value


def _name(what: str, optional: bool = False) -> Any:
    def check(value: str) -> str | None:
        value = value.strip()
        if optional and not value:
            return None
        if problem := name_problem(value, what):
            raise click.UsageError(problem)
        return value

    return check


def _env_entry(value: str) -> tuple[str, str] | None:
    if not value.strip():
        return None
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise click.UsageError(
            f"{value!r} is not KEY=VALUE (use {PRIVATE_PLACEHOLDER} as the value of a secret)"
        )
    return key.strip(), val


def _command(value: str) -> list[str] | None:
    if not value.strip():
        return None
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise click.UsageError(f"cannot split the command: {exc}") from None


def ask_pipeline(tools: list[str], datasets: list[str]) -> dict[str, Any]:
    """The prototype's questions: name, description, then steps until 'add another step?' is no.

    Questions go to stderr: stdout stays for the result (and is pure JSON with --json)."""
    if tools:
        click.echo(clean(f"Registered tools: {', '.join(tools)}"), err=True)
    if datasets:
        click.echo(clean(f"Registered datasets: {', '.join(datasets)}"), err=True)
    name = click.prompt("Pipeline name", value_proc=_name("pipeline name"), err=True)
    description = click.prompt("Description", default="", show_default=False, err=True)
    steps: list[dict[str, Any]] = []
    while True:
        click.echo(f"Step {len(steps) + 1}", err=True)
        step: dict[str, Any] = {
            "name": click.prompt("  Step name", value_proc=_name("step name"), err=True),
            "tool": click.prompt("  Tool", value_proc=_name("tool name"), err=True),
            "input_dataset": click.prompt(
                "  Input dataset (empty for none)",
                default="",
                show_default=False,
                value_proc=_name("dataset name", True),
                err=True,
            ),
            "output_dataset": click.prompt("  Output dataset", value_proc=_name("dataset name"), err=True),
            "cmd": click.prompt(
                "  Command (empty for the image's default)",
                default="",
                show_default=False,
                value_proc=_command,
                err=True,
            ),
        }
        env: dict[str, str] = {}
        while entry := click.prompt(
            "  Environment variable KEY=VALUE (empty when done)",
            default="",
            show_default=False,
            value_proc=_env_entry,
            err=True,
        ):
            env[entry[0]] = entry[1]
        step["env"] = env or None
        step["docker_socket"] = click.confirm(
            "  Mount the Docker socket into the container?", default=False, err=True
        )
        steps.append(step)
        if not click.confirm("Add another step?", default=False, err=True):
            break
    return {"name": name, "description": description, "steps": steps}
