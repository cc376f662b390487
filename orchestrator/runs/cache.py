"""The memo key of a step: what must be equal for an earlier success to stand in for a new attempt.

Input commit, the tool's image id, cmd, env (private values only by their hash, so the key itself
leaks nothing) and the step's definition (without ``cache`` itself, the retry knobs and the resource
limits ``memory``/``cpus`` and the ``pool``, which do not change what is computed; leaving the limits out also keeps
the keys of steps stored before those fields existed).
"""

from __future__ import annotations

import hashlib
import json

from ..domain.pipeline import Step

# Fields that change how a step is tried, not what it computes.
_NOT_IN_KEY = {
    "private_env",
    "cache",
    "retries",
    "retry_delay",
    "stall_timeout",
    "timeout",
    "needs",
    "memory",
    "cpus",
    "gpus",  # like memory and cpus: how fast, not what (and existing keys stay valid)
    "pool",  # where a step waits for a slot, not what it computes
}


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def memo_key(step: Step, tool: str, image_id: str, input_commit: str | None) -> str:
    """A hex SHA-256 of everything the step's output depends on (see module docstring)."""
    definition = step.model_dump(exclude=_NOT_IN_KEY)
    definition["tool"] = tool
    private = {k: _digest(v) for k, v in sorted((step.private_env or {}).items())}
    material = {
        "input_commit": input_commit,
        "image_id": image_id,
        "definition": definition,
        "private_env": private,
    }
    return _digest(json.dumps(material, sort_keys=True, separators=(",", ":")))
