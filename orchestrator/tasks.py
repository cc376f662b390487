"""Background tasks (watch loops, retries, heartbeats), started one way so none can die unnoticed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def spawn(
    coroutine: Coroutine[Any, Any, T], name: str, keep: set[asyncio.Task[Any]] | None = None
) -> asyncio.Task[T]:
    """Start ``coroutine`` as a task named ``name``; a failure is logged with its traceback. ``keep``
    holds the task while it runs (asyncio keeps only weak references) so its owner can cancel it."""
    task = asyncio.create_task(coroutine, name=name)
    if keep is not None:
        keep.add(task)
        task.add_done_callback(keep.discard)
    task.add_done_callback(log_failure)
    return task


def log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        log.error("background task %r stopped: %s", task.get_name(), exc, exc_info=exc)


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended (an owner's ``close``); their errors are dropped."""
    ending = list(tasks)  # a copy: the owner's set shrinks as they end
    for task in ending:
        task.cancel()
    await asyncio.gather(*ending, return_exceptions=True)
