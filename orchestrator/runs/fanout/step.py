"""One fan-out step from input snapshot to combined output: shard, run, combine.

``run_fan_out`` is what the engine calls instead of running one container: it lists the snapshot's
files matching the glob, splits them into shards, gives each container attempt the shard's own input
folder and a fresh empty output folder, runs them through ``Coordinator`` and, when every shard has
succeeded, moves the winners' outputs into the node branch's work folder (``files.combine``). The
engine then commits that folder once and votes once, exactly as for a single container.

The engine supplies ``run_container(ShardRun, input_dir, output_dir) -> ShardOutcome``: it builds the
executor request (``MAO_SHARD``, ``MAO_SHARD_COUNT``, ``MAO_ATTEMPT``), records the attempt with its
shard, and kills its container when cancelled. Scratch folders live under ``scratch`` and are removed
here, off the event loop, whatever happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...datasets.trees import TreeLimits, TreeTooLarge, remove_tree
from ...domain.fanout import MAX_SHARDS, FanOut
from .coordinator import (
    Coordinator,
    Delay,
    FanOutSummary,
    Progress,
    ShardOutcome,
    ShardRun,
    SpeculationPolicy,
)
from .files import Combined, ShardCollision, combine, list_files, materialise, split

log = logging.getLogger(__name__)


# (shard attempt, its input folder, its empty output folder) -> how the container ended
ShardContainer = Callable[[ShardRun, Path, Path], Coroutine[Any, Any, ShardOutcome]]


@dataclass(frozen=True)
class FanOutStepResult:
    """``ok``: every shard succeeded and their outputs are in the work folder. Otherwise ``error`` says
    why, ``retryable`` whether running the step again could pass, and ``collisions`` names the paths
    two shards both wrote ({path: shard indexes})."""

    ok: bool
    summary: FanOutSummary
    error: str | None = None
    retryable: bool = False
    combined: Combined | None = None
    collisions: dict[str, tuple[int, ...]] | None = None


async def run_fan_out(
    fan_out: FanOut,
    *,
    snapshot: Path,
    scratch: Path,
    workdir: Path,
    run_container: ShardContainer,
    retries: int = 0,
    delay: Delay | None = None,
    speculation: SpeculationPolicy | None = None,
    progress: Progress | None = None,
    fallback: bool = False,
    limits: TreeLimits | None = None,
) -> FanOutStepResult:
    """Run the step's shards and combine their outputs into ``workdir`` (see the module docstring).
    ``scratch`` must not exist yet; it is removed before returning (or raising). ``limits`` bound
    the walks of the snapshot and of each shard's output (a tree past them fails the step, naming
    its path)."""
    inputs: dict[int, asyncio.Future[Path]] = {}
    filling: list[asyncio.Future[Any]] = []  # threads writing below ``scratch``, awaited before removal
    try:
        try:
            files = await asyncio.to_thread(list_files, snapshot, fan_out.glob, limits)
        except TreeTooLarge as exc:
            return FanOutStepResult(False, FanOutSummary(0, 0, 0, 0), f"the input snapshot's {exc}")
        shards = split(files, fan_out.split_size)
        if len(shards) > MAX_SHARDS:
            summary = FanOutSummary(len(shards), 0, 0, 0)
            return FanOutStepResult(
                False,
                summary,
                f"{len(files)} files match {fan_out.glob!r}: {len(shards)} shards of {fan_out.split_size} "
                f"is more than the {MAX_SHARDS} allowed; raise split_size",
            )
        if not shards:
            log.info("fan-out: no input file matches %r; the step runs no container", fan_out.glob)

        async def one(run: ShardRun) -> ShardOutcome:
            index = run.shard.index
            if index not in inputs:
                # Made once per shard and shared by its retries and twin (mounted read-only).
                inputs[index] = asyncio.ensure_future(
                    asyncio.to_thread(materialise, snapshot, run.shard, scratch / f"{index}" / "input")
                )
            input_dir = await asyncio.shield(inputs[index])
            output = scratch / f"{index}" / f"output-{run.attempt}"
            # Tracked: a cancelled shard's mkdir still runs, and must not recreate removed scratch.
            making = asyncio.ensure_future(asyncio.to_thread(output.mkdir, parents=True))
            filling.append(making)
            await asyncio.shield(making)
            outcome = await run_container(run, input_dir, output)
            if outcome.ok and outcome.output is None:
                outcome = dataclasses.replace(outcome, output=output)
            return outcome

        coordinator = Coordinator(
            shards,
            one,
            max_parallel=fan_out.max_parallel,
            retries=retries,
            delay=delay,
            speculation=speculation,
            progress=progress,
            fallback=fallback,
        )
        result = await coordinator.run()
        if not result.ok:
            return FanOutStepResult(False, result.summary, result.error, result.retryable)
        outputs = [(index, outcome.output) for index, outcome in sorted(result.winners.items())]
        try:
            combined = await asyncio.to_thread(
                combine, [(i, path) for i, path in outputs if path is not None], workdir, limits
            )
        except ShardCollision as collision:
            return FanOutStepResult(
                False, result.summary, collision.message, retryable=False, collisions=collision.paths
            )
        except TreeTooLarge as exc:
            return FanOutStepResult(False, result.summary, f"a shard's output: {exc}", retryable=False)
        if combined.skipped:
            log.warning("fan-out: left out of the output: %s", "; ".join(combined.skipped[:20]))
        return FanOutStepResult(True, result.summary, combined=combined)
    finally:
        # A cancelled step still removes its shard folders (they can be large), once no thread is
        # still filling one, and returns only when they are gone, even when cancelled again.
        await _until_done(_remove(scratch, [*inputs.values(), *filling]))


async def _until_done(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` to its end although the caller is cancelled meanwhile (then re-raised)."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    future.result()
    if cancelled:
        raise asyncio.CancelledError


async def _remove(scratch: Path, filling: list[asyncio.Future[Any]]) -> None:
    await asyncio.gather(*filling, return_exceptions=True)
    await asyncio.to_thread(remove_tree, scratch)  # however deep a tool's tree; never raises
