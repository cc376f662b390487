"""Where containers run: the ``ExecutorBackend`` Protocol (base.py) and today's backend, the
executor service over HTTP (http.py)."""

from .base import ContainerRequest, ContainerResult, ExecutorBackend, KillRequest
from .http import ExecutorClient, StepRejected

__all__ = [
    "ContainerRequest",
    "ContainerResult",
    "ExecutorBackend",
    "ExecutorClient",
    "KillRequest",
    "StepRejected",
]
