"""How a submitted container stands, read from the engine's description of it (``docker inspect``)
plus what its monitor did (executor/containers.py). Pure: no engine, no clock of its own (``now`` is
given), so that every way a container can stand is tested without Docker
(tests/unit/test_container_state.py).

Stateless on purpose: after an executor restart the monitor's memory is gone, and the answer is the
same from the engine alone: a container never started past its ``mao.start-timeout`` is
``unschedulable``; one killed (137) after running its ``mao.timeout`` out is ``timed_out``; the
kernel's ``State.OOMKilled`` is ``oom_killed``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from executor.wire.containers import START_TIMEOUT_LABEL, TIMEOUT_LABEL, ContainerState, Ending, Phase

# The engine's states of a container that has ended for good.
ENDED_STATES = ("exited", "dead")
# A kill this close to the timeout (seconds) is the timeout's.
TIMEOUT_SLACK = 0.5


def parse_time(value: object) -> datetime | None:
    """The engine's RFC 3339 time (nanoseconds, 'Z'), or None for its zero time."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.replace("Z", "+00:00")
    date, dot, rest = text.partition(".")
    if dot:  # Python parses at most microseconds
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{date}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def label_seconds(labels: dict[str, str], key: str) -> float | None:
    try:
        return float(labels[key])
    except (KeyError, ValueError):
        return None


def ending_of_exit(
    status: dict[str, Any], labels: dict[str, str], started: datetime | None, finished: datetime | None
) -> Ending:
    """How an exited container ended, from the engine alone."""
    code = status.get("ExitCode")
    if code == 0:
        return Ending.COMPLETED
    if status.get("OOMKilled"):
        return Ending.OOM_KILLED
    timeout = label_seconds(labels, TIMEOUT_LABEL)
    # Killed by a monitor of an earlier process of this executor: it ran its time out.
    if code == 137 and timeout and started and finished and (finished - started).total_seconds() >= timeout - TIMEOUT_SLACK:
        return Ending.TIMED_OUT
    return Ending.FAILED


def describe(
    name: str,
    attrs: dict[str, Any],
    *,
    now: datetime,
    node: str,
    ending: Ending | None = None,
    message: str = "",
    monitored: bool = False,
    log_tail: str = "",
) -> ContainerState:
    """The container ``name`` as ``attrs`` (its inspect) shows it at ``now``. ``ending`` and
    ``message``: what its monitor decided (a timeout, a cancel); ``monitored``: a monitor still
    watches it (then a start timeout is the monitor's to decide)."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    status = attrs.get("State") or {}
    created = parse_time(attrs.get("Created"))
    started = parse_time(status.get("StartedAt"))
    finished = parse_time(status.get("FinishedAt"))
    engine_state = str(status.get("Status") or "")
    exit_code: int | None = status.get("ExitCode") if isinstance(status.get("ExitCode"), int) else None
    start_timeout = label_seconds(labels, START_TIMEOUT_LABEL)
    if engine_state == "created":
        phase = Phase.QUEUED
        if ending is None and status.get("Error"):
            ending, message = Ending.FAILED, str(status["Error"])
        if ending is None and start_timeout is not None and created is not None and not monitored:
            if (now - created).total_seconds() > start_timeout:
                ending = Ending.UNSCHEDULABLE
        if ending is not None:
            phase, exit_code = Phase.ENDED, None
    elif engine_state in ENDED_STATES:
        phase = Phase.ENDED
        ending = ending or ending_of_exit(status, labels, started, finished)
        if ending is Ending.OOM_KILLED and not message:
            message = "killed at its memory limit (out of memory)"
    else:
        phase, ending = Phase.RUNNING, None
    run_seconds = None
    if started is not None:
        until = finished if phase is Phase.ENDED and finished is not None else now
        run_seconds = round(max(0.0, (until - started).total_seconds()), 3)
    queued_seconds = None
    if created is not None:
        queued_seconds = round(max(0.0, ((started or now) - created).total_seconds()), 3)
    ended = phase is Phase.ENDED
    return ContainerState(
        name=name,
        engine_id=str(attrs.get("Id") or ""),
        phase=phase,
        ending=ending if ended else None,
        exit_code=exit_code if ended and ending is not Ending.UNSCHEDULABLE else None,
        image_id=str(attrs.get("Image") or "") or None,
        node=node,
        labels=dict(labels),
        created_at=created,
        started_at=started,
        ended_at=finished if ended else None,
        queued_seconds=queued_seconds,
        run_seconds=run_seconds,
        message=message,
        log_tail=log_tail if ended else "",
    )
