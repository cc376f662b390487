"""What the API accepts and the registries hold: tools, datasets, pipelines and their steps.

Request bodies are parsed into these models; a ``ValidationError`` becomes a 400 that names each bad
field. Unknown fields are ignored so that clients of the prototype keep working.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from .datasets.repo import check_master
from .names import check_name
from .sizes import parse_size

# A step env value of exactly this marks a secret that each instance supplies itself (``private_env``).
PRIVATE_PLACEHOLDER = "{{ MAO_PRIVATE_VARIABLE }}"
MAX_STEPS = 50

_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")

Name = Annotated[str, AfterValidator(check_name)]
Text = Annotated[str, Field(max_length=4000)]


def _scalar_to_str(value: Any) -> Any:
    # Old pipeline files write numbers and booleans in env; containers only take strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _no_nul(value: str) -> str:
    # The kernel and the Docker engine cut strings at NUL: the executor refuses them, so init does too.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _memory(value: int | str) -> int:
    # Bytes, or a size with a unit ("512m"); the executor takes bytes and refuses less than 6 MiB.
    size = parse_size(value) if isinstance(value, str) else value
    if not 6 * 1024 * 1024 <= size <= 2**50:
        raise ValueError("must be between 6 MiB and 1 PiB (bytes, or a size such as '512m')")
    return size


EnvValue = Annotated[str, BeforeValidator(_scalar_to_str), Field(max_length=65536), AfterValidator(_no_nul)]
# Strict where the prototype only ever sent the right JSON type: "yes" is not true and "60" is not 60.
StrictBool = Annotated[bool, Strict()]
Memory = Annotated[Annotated[int, Strict()] | str, AfterValidator(_memory)]


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


def check_image(value: str) -> str:
    if not _IMAGE_RE.fullmatch(value):
        raise ValueError(f"invalid image reference {value!r}")
    return value


class Tool(Model):
    name: Name
    image: Annotated[str, AfterValidator(check_image)]
    author: Text = ""
    data_repo: Text = ""
    code_repo: Text = ""
    artefact: Text = ""
    description: Text = ""


def _check_master(value: str) -> str:
    if problem := check_master(value):
        raise ValueError(problem)
    return value


class Dataset(Model):
    name: Name
    master: Annotated[str, Field(max_length=2000), AfterValidator(_check_master)]
    nodes: list[Name] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _unwrap_body(cls, data: Any) -> Any:
        # The prototype's request is {name, body: {master, nodes}}; a flat {name, master} works too.
        if isinstance(data, dict) and isinstance(data.get("body"), dict):
            return {**data["body"], "name": data.get("name")}
        return data


def check_env(env: dict[str, str] | None) -> dict[str, str] | None:
    for key in env or {}:
        if not _ENV_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid environment variable name {key!r}")
    return env


class Step(Model):
    name: Name
    tool: Name
    output_dataset: Name
    input_dataset: Name | None = None
    env: Annotated[dict[str, EnvValue] | None, AfterValidator(check_env)] = None
    cmd: list[Annotated[str, Strict(), Field(max_length=65536), AfterValidator(_no_nul)]] | None = Field(
        default=None, max_length=1000
    )
    docker_socket: StrictBool = False
    timeout: Annotated[float, Strict(), Field(gt=0, le=7 * 86400)] | None = None
    # Resource limits; unset means the instance's MAO_STEP_MEMORY / MAO_STEP_CPUS.
    memory: Memory | None = None
    cpus: Annotated[float, Strict(), Field(gt=0, le=1024)] | None = None
    # Write-only: values of this instance's private variables. Kept in the local database only.
    private_env: Annotated[dict[str, EnvValue] | None, AfterValidator(check_env)] = None

    @field_validator("input_dataset", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def private_keys(self) -> list[str]:
        return [k for k, v in (self.env or {}).items() if v == PRIVATE_PLACEHOLDER]

    def public(self) -> dict[str, Any]:
        """The step as other instances and API clients may see it: no secret values. Unset limits are
        left out, so registrations made before those fields existed still compare equal."""
        data = self.model_dump(exclude={"private_env"})
        for key in ("memory", "cpus"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Pipeline(Model):
    name: Name
    description: Text = ""
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _unique_step_names(self) -> Pipeline:
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"step names must be unique within a pipeline: {', '.join(duplicates)}")
        return self

    def missing_private_values(self) -> list[str]:
        return [
            f"{step.name}.{key}"
            for step in self.steps
            for key in step.private_keys()
            if not (step.private_env or {}).get(key)
        ]

    def public_steps(self) -> list[dict[str, Any]]:
        return [s.public() for s in self.steps]

    def tools(self) -> list[str]:
        return sorted({s.tool for s in self.steps})

    def datasets(self) -> list[str]:
        names = {s.output_dataset for s in self.steps}
        names.update(s.input_dataset for s in self.steps if s.input_dataset)
        return sorted(names)


def node_branch(step: str, instance: str) -> str:
    """The branch a step writes to in its output dataset."""
    return f"{step}-{instance}"
