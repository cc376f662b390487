"""Fan-out: one step's shards run side by side, each retried on its own, stragglers speculated.

``FanOut`` is the step field (``fan_out: {glob, split_size, max_parallel}``, ``domain.fanout``). ``Coordinator`` runs a
list of ``Shard``s (see ``files.py``) through an injected ``run_shard(ShardRun) -> ShardOutcome``,
which owns everything about one container (request, attempt record, kill on cancel): the coordinator
only decides what runs when, so it is tested without Docker.

Contract of ``run_shard``: it returns a ``ShardOutcome`` for a container that ran (or could not run);
when its task is cancelled it must stop its container (kill and remove) before re-raising
``CancelledError``. An exception other than ``CancelledError`` fails the step (not retried).

Rules:
- At most ``max_parallel`` containers at once, speculative copies included. Shards start in order;
  a retry whose delay is over starts before the shards not started yet, and a shard waiting for its
  retry delay does not hold a slot.
- Each shard is retried on its own: it fails for good after ``retries + 1`` failed attempts, or at
  once when an outcome says it cannot pass (``retryable=False``). A shard failing for good fails the
  step: the other running containers are cancelled and no new one starts.
- Speculation. A running shard gets ONE second copy when all of these hold: at least
  ``SpeculationPolicy.fraction`` (75 %) of the shards have succeeded; no shard is waiting to start
  (not even a retry waiting for its delay: speculation only uses slots that would stay idle); a slot
  is free; and the shard's copy has run
  longer than both ``factor`` (2) times the median duration of the succeeded shards and that median
  plus ``min_extra`` (30 s). The first copy to succeed wins and the other is cancelled (its container
  killed). A copy that fails while its twin runs is recorded and nothing else happens; only when no
  copy of the shard is left running is the shard retried or failed. Speculative copies do not spend
  the retry budget unless they fail.
- ``fallback=True`` (the step has a ``fallback_tool``): a shard out of attempts runs once more with
  ``ShardRun.fallback`` set, as the engine does for a whole step, before it fails for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import statistics
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...domain.states import AttemptStatus
from .files import Shard

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SpeculationPolicy:
    """When a straggler gets a second copy (see the module docstring). ``enabled=False`` turns it off."""

    fraction: float = 0.75
    factor: float = 2.0
    min_extra: float = 30.0
    enabled: bool = True

    def threshold(self, median: float) -> float:
        return max(self.factor * median, median + self.min_extra)


@dataclass(frozen=True)
class ShardRun:
    """One container for one shard: ``attempt`` counts every container started for this shard (1-based,
    ``MAO_ATTEMPT``); ``speculative`` marks a second copy of a running shard."""

    shard: Shard
    attempt: int
    speculative: bool = False
    fallback: bool = False


@dataclass(frozen=True)
class ShardOutcome:
    """How one container ended. ``output`` is the folder holding its output when ``ok``."""

    ok: bool
    error: str | None = None
    retryable: bool = True
    output: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FanOutSummary:
    """``shards`` in GET /runs/{id}: shards in all, succeeded, failed for good, speculative copies."""

    count: int
    succeeded: int
    failed: int
    speculative: int

    def as_dict(self) -> dict[str, int]:
        return {
            "count": self.count,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "speculative": self.speculative,
        }


@dataclass(frozen=True)
class FanOutResult:
    """``winners`` maps each succeeded shard's index to its winning outcome (all of them when ``ok``)."""

    ok: bool
    summary: FanOutSummary
    winners: dict[int, ShardOutcome]
    error: str | None = None
    retryable: bool = True


RunShard = Callable[[ShardRun], Coroutine[Any, Any, ShardOutcome]]
Delay = Callable[[Shard, int], float]  # (shard, failures so far) -> seconds before the next attempt
Progress = Callable[[FanOutSummary], Awaitable[None]]


@dataclass
class _State:
    shard: Shard
    attempts: int = 0
    failures: int = 0
    speculated: bool = False
    fallback: bool = False  # the next attempts run the fallback tool
    done: bool = False
    last_error: str | None = None
    running: dict[asyncio.Task[ShardOutcome], tuple[ShardRun, float]] = field(default_factory=dict)


class _StepFailed(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Coordinator:
    """Runs ``shards`` through ``run_shard``; ``run()`` once, then read its ``FanOutResult``."""

    def __init__(
        self,
        shards: Sequence[Shard],
        run_shard: RunShard,
        *,
        max_parallel: int,
        retries: int = 0,
        delay: Delay | None = None,
        speculation: SpeculationPolicy | None = None,
        progress: Progress | None = None,
        fallback: bool = False,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self._states = {shard.index: _State(shard) for shard in shards}
        self._run_shard = run_shard
        self._max_parallel = max_parallel
        self._retries = retries
        self._delay = delay or (lambda _shard, _failures: 0.0)
        self._policy = speculation or SpeculationPolicy()
        self._progress = progress
        self._reporter: asyncio.Task[None] | None = None
        self._dirty = False
        self._fallback = fallback
        # Shards start in order; a retry whose delay is over goes first (its step fails sooner if it
        # fails again, and its input is ready anyway). The heap holds (due, shard index).
        self._fresh: deque[int] = deque(s.index for s in shards)
        self._retry: list[tuple[float, int]] = []
        self._tasks: dict[asyncio.Task[ShardOutcome], int] = {}
        self._durations: list[float] = []
        self._winners: dict[int, ShardOutcome] = {}
        self._failed = 0
        self._speculative = 0

    def summary(self) -> FanOutSummary:
        return FanOutSummary(len(self._states), len(self._winners), self._failed, self._speculative)

    async def run(self) -> FanOutResult:
        loop = asyncio.get_running_loop()
        self._report()  # the shard count, before any shard ends
        try:
            while self._fresh or self._retry or self._tasks:
                now = loop.time()
                self._start_ready(now)
                self._speculate(now)
                if not self._tasks:
                    # Only retries waiting for their delay: sleep until the first is due.
                    await asyncio.sleep(max(0.0, self._retry[0][0] - now))
                    continue
                done, _ = await asyncio.wait(
                    self._tasks, timeout=self._next_wake(now), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    await self._finished(task, loop.time())
        except _StepFailed as failure:
            await self._cancel_all("cancelled: another shard of the step failed")
            await self._progress_written()
            return FanOutResult(
                False, self.summary(), dict(self._winners), failure.message, failure.retryable
            )
        except BaseException:
            # Cancelled (run cancel, shutdown): every container goes, even if we are cancelled again.
            await asyncio.shield(self._cancel_all("cancelled: the step was stopped"))
            if self._reporter is not None:
                self._reporter.cancel()
            raise
        await self._progress_written()
        return FanOutResult(True, self.summary(), dict(self._winners))

    # -- starting ----------------------------------------------------------------------------------

    def _start(self, state: _State, now: float, speculative: bool) -> None:
        state.attempts += 1
        shard_run = ShardRun(state.shard, state.attempts, speculative, state.fallback)
        task = asyncio.create_task(
            self._run_shard(shard_run), name=f"shard {state.shard.index}/{state.shard.count}"
        )
        state.running[task] = (shard_run, now)
        self._tasks[task] = state.shard.index
        if speculative:
            state.speculated = True
            self._speculative += 1
            log.info(
                "shard %d/%d has run %.1f s: a speculative copy starts (attempt %d)",
                state.shard.index,
                state.shard.count,
                now - min(started for _, started in state.running.values()),
                state.attempts,
            )

    def _start_ready(self, now: float) -> None:
        while len(self._tasks) < self._max_parallel:
            if self._retry and self._retry[0][0] <= now:
                index = heapq.heappop(self._retry)[1]
            elif self._fresh:
                index = self._fresh.popleft()
            else:
                return
            self._start(self._states[index], now, speculative=False)

    def _median(self) -> float | None:
        return statistics.median(self._durations) if self._durations else None

    def _speculate(self, now: float) -> None:
        median = self._median()
        if not self._policy.enabled or median is None or self._fresh or self._retry:
            return
        if len(self._winners) < self._policy.fraction * len(self._states):
            return
        threshold = self._policy.threshold(median)
        for state in self._states.values():
            if len(self._tasks) >= self._max_parallel:
                return
            if state.done or state.speculated or len(state.running) != 1:
                continue
            ((_, started),) = state.running.values()
            if now - started > threshold:
                self._start(state, now, speculative=True)

    def _next_wake(self, now: float) -> float | None:
        """Seconds until something may change without a container ending: a retry becomes due, or a
        running shard crosses the speculation threshold. None: only an ending can change anything."""
        wakes = [self._retry[0][0] - now] if self._retry else []
        median = self._median()
        if self._policy.enabled and median is not None and not self._fresh and not self._retry:
            threshold = self._policy.threshold(median)
            for state in self._states.values():
                if not state.done and not state.speculated and len(state.running) == 1:
                    ((_, started),) = state.running.values()
                    wakes.append(started + threshold - now)
        # A hair past the moment, so the comparison that follows is true.
        return max(0.0, min(wakes)) + 0.001 if wakes else None

    # -- endings -----------------------------------------------------------------------------------

    async def _finished(self, task: asyncio.Task[ShardOutcome], now: float) -> None:
        if task not in self._tasks:
            return  # a twin that ended in the same instant as the winner, already reaped by _cancel
        index = self._tasks.pop(task)
        state = self._states[index]
        shard_run, started = state.running.pop(task)
        try:
            outcome = task.result()
        except asyncio.CancelledError:
            outcome = ShardOutcome(ok=False, error=AttemptStatus.CANCELLED.value)
        except Exception as exc:
            log.exception("shard %d/%d: running its container failed unexpectedly", index, state.shard.count)
            raise _StepFailed(
                f"shard {index}/{state.shard.count} (attempt {shard_run.attempt}): {exc}", retryable=False
            ) from exc
        if state.done:
            return  # a twin already won; this one was cancelled or lost the race
        if outcome.ok:
            state.done = True
            self._winners[index] = outcome
            self._durations.append(now - started)
            # The losing twin, if any.
            await self._cancel(list(state.running), "cancelled: the other copy of this shard finished first")
            self._report()
            return
        state.failures += 1
        state.last_error = outcome.error
        if state.running:
            return  # its twin is still running and may yet succeed
        out_of_attempts = not outcome.retryable or state.failures > self._retries
        if out_of_attempts and self._fallback and not state.fallback:
            state.fallback = True
            state.speculated = False
            log.info(
                "shard %d/%d: attempts exhausted; one more with the fallback tool", index, state.shard.count
            )
            heapq.heappush(self._retry, (now, index))
            return
        if out_of_attempts:
            state.done = True
            self._failed += 1
            self._report()
            tries = f"{state.failures} failed attempt{'s' if state.failures != 1 else ''}"
            if state.fallback:
                tries += ", the last with the fallback tool"
            raise _StepFailed(
                f"shard {index}/{state.shard.count} failed ({tries}): {outcome.error or AttemptStatus.FAILED.value}",
                retryable=outcome.retryable,
            )
        wait = max(0.0, float(self._delay(state.shard, state.failures)))
        log.info(
            "shard %d/%d failed (attempt %d: %s); retrying in %.1f s",
            index,
            state.shard.count,
            shard_run.attempt,
            outcome.error,
            wait,
        )
        heapq.heappush(self._retry, (now + wait, index))
        state.speculated = False  # a fresh attempt may be speculated again

    def _report(self) -> None:
        """Have the newest summary recorded, without holding up the scheduling: one writer task
        at a time, which writes again if shards ended meanwhile (so many endings cost few writes)."""
        if self._progress is None:
            return
        self._dirty = True
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.create_task(self._write_progress(self._progress))

    async def _write_progress(self, progress: Progress) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await progress(self.summary())
            except Exception:  # progress is informative: a failed update must not fail the step
                log.warning("could not record fan-out progress", exc_info=True)

    async def _progress_written(self) -> None:
        if self._reporter is not None:
            await asyncio.gather(self._reporter, return_exceptions=True)

    async def _cancel(self, tasks: list[asyncio.Task[ShardOutcome]], reason: str) -> None:
        """Cancel ``tasks`` (``reason`` is the CancelledError's message) and wait for them."""
        for task in tasks:
            task.cancel(reason)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            index = self._tasks.pop(task, None)
            if index is not None:
                self._states[index].running.pop(task, None)

    async def _cancel_all(self, reason: str) -> None:
        self._fresh.clear()
        self._retry.clear()
        with contextlib.suppress(Exception):
            await self._cancel(list(self._tasks), reason)
