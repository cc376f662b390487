"""A step's resource limits as the executor takes them: the step's own, else the instance's defaults."""

from __future__ import annotations

from typing import NamedTuple

from ..config import Settings
from ..domain.pipeline import Step


class StepLimits(NamedTuple):
    memory: int  # bytes
    cpus: float
    pids: int


def step_limits(step: Step, settings: Settings) -> StepLimits:
    """``memory`` (bytes), ``cpus`` and ``pids`` for the executor's /run request."""
    return StepLimits(
        memory=step.memory or settings.step_memory,
        cpus=float(step.cpus or settings.step_cpus),
        pids=settings.step_pids,
    )
