"""Moved to ``orchestrator.executors``; kept so existing imports keep working."""

from .executors import ContainerResult, ExecutorClient, StepRejected

__all__ = ["ContainerResult", "ExecutorClient", "StepRejected"]
