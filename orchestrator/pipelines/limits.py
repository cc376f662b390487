"""A step's resource limits as the executor takes them: the step's own, else the instance's defaults."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..models import Step


def step_limits(step: Step, settings: Settings) -> dict[str, Any]:
    """``memory`` (bytes), ``cpus`` and ``pids`` for the executor's /run body."""
    return {
        "memory": step.memory or settings.step_memory,
        "cpus": step.cpus or settings.step_cpus,
        "pids": settings.step_pids,
    }
