"""Where one run's time goes, phase by phase: ``MAO_PHASE_TIMINGS=1``, read by
``bench/pipeline_overhead.py --phases``. Off by default.

A waiting ``POST /pipeline/run`` opens a ``PhaseLog`` in its request's context (``begin``); the run's
task and every task and thread it starts inherit the context, so each ``with phase("name"):`` on the
step's path (and each git process, ``datasets/_git.py``) adds one span (name, start, end) to that one
log, without any id passed around. When the answer is ready the handler appends the log as one JSON
line to ``<MAO_DATA_DIR>/phase-timings.jsonl`` (0600): run id, spans, and when the handler began and
ended, in ``time.monotonic()`` seconds (CLOCK_MONOTONIC: the same clock in every process on the host,
so the bench can place its own send and receive times around them).

Why a context variable and a file, not a response field or a route: nothing of the API, its schema or
the database changes, runs the timer does not cover (schedules, triggers, ``wait: false``) pay nothing,
and with the setting off ``begin`` returns at once and ``phase`` is one context-variable read that finds
no log and hands back a shared no-op context manager: no clock read, no allocation on the hot path.
Spans that end after the answer (the log keep and the container's removal, both in the background)
are not in the line: they are not on the step's path.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from contextlib import AbstractContextManager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType

FILE_NAME = "phase-timings.jsonl"

_NOOP: AbstractContextManager[None] = contextlib.nullcontext()


class PhaseLog:
    """The spans of one run: (name, start, end) in monotonic seconds, in the order they ended."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        # list.append is atomic: spans come from the event loop and from git's threads alike.
        self.spans: list[tuple[str, float, float]] = []

    def line(self, run_id: str, ended: float) -> str:
        # Only what ended by the answer: background work of the run (its log keep) may still add.
        spans = [
            [name, round(start, 6), round(end, 6)] for name, start, end in list(self.spans) if end <= ended
        ]
        return json.dumps(
            {"run": run_id, "began": round(self.began, 6), "ended": round(ended, 6), "spans": spans}
        )


_LOG: ContextVar[PhaseLog | None] = ContextVar("mao_phase_log", default=None)


class _Span:
    __slots__ = ("_log", "_name", "_start")

    def __init__(self, log: PhaseLog, name: str) -> None:
        self._log = log
        self._name = name
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.monotonic()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._log.spans.append((self._name, self._start, time.monotonic()))


def phase(name: str) -> AbstractContextManager[None]:
    """``with phase("commit"):``: one span of the current run's log; nothing when none is open."""
    log = _LOG.get()
    if log is None:
        return _NOOP
    return _Span(log, name)


def begin(enabled: bool) -> PhaseLog | None:
    """Open a log in the current context (the request's task); None when timings are off."""
    if not enabled:
        return None
    log = PhaseLog()
    _LOG.set(log)
    return log


def write(log: PhaseLog, run_id: str, data_dir: Path, ended: float) -> None:
    """Append ``log`` as one line, ``ended`` the monotonic time the answer was ready (blocking: call
    it in a thread). The file is private, like the rest of the data dir (it names runs)."""
    line = log.line(run_id, ended) + "\n"
    fd = os.open(data_dir / FILE_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
