"""The ``fan_out`` step field and the rule for its glob: what a pipeline definition says about fan-out.

How the shards then run is ``runs.fanout`` (``coordinator``, ``files``, ``step``, ``attempt``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .paths import plain_path_problem

MAX_GLOB_LENGTH = 512


def glob_problem(pattern: object) -> str | None:
    """Why ``pattern`` cannot be a fan-out glob, or None when it can.

    A glob is relative to the input snapshot: ``*`` and ``?`` stay inside one path segment, ``**``
    as a whole segment matches any number of folders (``**/*.csv``), ``[...]`` is a character class.
    It cannot reach outside the snapshot: no leading ``/``, no ``.`` or ``..`` segment."""
    if problem := plain_path_problem(pattern, "glob", MAX_GLOB_LENGTH):
        return problem
    assert isinstance(pattern, str)
    if pattern.startswith("/"):
        return f"glob {pattern!r} must be relative to the input dataset (no leading '/')"
    if any(part in ("", ".", "..") for part in pattern.split("/")):
        return f"glob {pattern!r} must not contain empty, '.' or '..' segments"
    return None


MAX_SPLIT_SIZE = 100_000
MAX_PARALLEL = 256
MAX_SHARDS = 10_000


def _check_glob(value: str) -> str:
    if problem := glob_problem(value):
        raise ValueError(problem)
    return value


class FanOut(BaseModel):
    """The ``fan_out`` step field. Unknown keys are an error (a misspelt ``max_paralel`` must not
    silently become the default)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    glob: Annotated[str, AfterValidator(_check_glob)]
    split_size: Annotated[int, Field(ge=1, le=MAX_SPLIT_SIZE)] = 1
    max_parallel: Annotated[int, Field(ge=1, le=MAX_PARALLEL)] = 4
