"""Data triggers that would start each other for ever: found before one is armed.

A data trigger runs pipeline P when dataset d's ground-truth advances (``d -> P``); a run of P advances
the datasets its steps write (``P -> d'``). Arming ``d -> P`` closes a cycle when a chain of armed
triggers leads from P's outputs back to a pipeline that writes d: then each run starts the next, and
the last starts the first again (``A -> d1 -> B -> d2 -> A``; the shortest is a pipeline triggered by
a dataset it writes itself). Both scopes count alike: a federation-wide trigger fires on some
instance, a local one here, and either way the chain goes on. What this instance cannot see (another
instance's local triggers) cannot be checked here; that instance checks its own when it arms them.

Pure: the caller gathers the armed triggers and says what each pipeline writes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ArmedTrigger:
    """Runs ``pipeline`` at each ground-truth advance of ``dataset``."""

    pipeline: str
    dataset: str


Outputs = Callable[[str], Awaitable[set[str]]]


async def find_cycle(new: ArmedTrigger, armed: Iterable[ArmedTrigger], outputs: Outputs) -> list[str] | None:
    """The chain ``[P, d1, P1, d2, ..., P]`` (pipelines and the datasets between them) that arming
    ``new`` would close, or None. ``outputs(pipeline)`` is what a run of it writes."""
    started_by: dict[str, list[str]] = {}  # dataset -> pipelines its advances start
    for trigger in armed:
        started_by.setdefault(trigger.dataset, []).append(trigger.pipeline)
    # Breadth first from the new trigger's pipeline: the shortest chain back is the one named.
    came_from: dict[str, tuple[str, str] | None] = {new.pipeline: None}  # pipeline -> (previous, dataset)
    queue = deque([new.pipeline])
    while queue:
        pipeline = queue.popleft()
        written = await outputs(pipeline)
        if new.dataset in written:
            return [*_chain(pipeline, came_from), new.dataset, new.pipeline]
        for dataset in sorted(written):
            for following in started_by.get(dataset, []):
                if following not in came_from:
                    came_from[following] = (pipeline, dataset)
                    queue.append(following)
    return None


def _chain(last: str, came_from: dict[str, tuple[str, str] | None]) -> list[str]:
    chain = [last]
    step = came_from[last]
    while step is not None:
        previous, dataset = step
        chain[:0] = [previous, dataset]
        step = came_from[previous]
    return chain


def describe(chain: list[str]) -> str:
    """``A -> d1 -> B -> d2 -> A`` in words an operator can act on."""
    if len(chain) == 3:
        return (
            f"pipeline {chain[0]!r} writes {chain[1]!r} itself: a trigger on it would start the pipeline "
            "again at each of its own runs"
        )
    return (
        f"the data triggers would form a cycle: {' -> '.join(chain)} (each pipeline writes the dataset "
        "after it, and each dataset's advance starts the pipeline after it), so every run would start "
        "the next for ever; remove one of these triggers first (DELETE /jobs/{id})"
    )
