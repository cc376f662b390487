"""Moved to ``orchestrator.runs`` (the run engine); kept so existing imports keep working."""

from ..runs.engine import RunInProgress, Runner

__all__ = ["RunInProgress", "Runner"]
