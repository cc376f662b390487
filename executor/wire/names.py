"""Names of tools, datasets, pipelines, steps and instances.

A name ends up in etcd keys, file system paths, git branch names (``<step>-<instance>``) and docker
container names, so one rule guards all of them: no ``/`` (no path traversal), no leading ``-`` (no option
injection into git or docker), no leading ``.``, and nothing git refuses in a branch name.
Standard library only: maoctl imports this module too.
"""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)


def name_problem(value: object, what: str = "name") -> str | None:
    """Why ``value`` is not a valid name, or None when it is."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not _NAME_RE.fullmatch(value):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return (
            f"invalid {what} {shown!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    # Valid by the pattern but not as a git branch name.
    if ".." in value or value.endswith(".") or value.endswith(".lock"):
        return f"invalid {what} {value!r}: must not contain '..' or end with '.' or '.lock'"
    return None


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a valid name; raise ValueError saying why not otherwise."""
    problem = name_problem(value, what)
    if problem:
        raise ValueError(problem)
    assert isinstance(value, str)
    return value
