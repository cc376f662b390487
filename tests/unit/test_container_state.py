"""How a submitted container stands, from the engine's description alone (executor/container_state.py):
every generated engine state reads as one consistent answer, the same after an executor restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from executor.container_state import describe, parse_time
from executor.wire.containers import START_TIMEOUT_LABEL, TIMEOUT_LABEL, Ending, Phase

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def stamp(moment: datetime | None, nanos: int = 0) -> str:
    """The engine's form: RFC 3339 with nanoseconds and 'Z' (its zero time for None)."""
    if moment is None:
        return "0001-01-01T00:00:00Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}{nanos:03d}Z"


def inspect(
    status: str,
    *,
    created: datetime,
    started: datetime | None = None,
    finished: datetime | None = None,
    code: int = 0,
    oom: bool = False,
    error: str = "",
    labels: dict[str, str] | None = None,
) -> dict[str, object]:
    return {
        "Id": "c0ffee",
        "Image": "sha256:" + "a" * 64,
        "Created": stamp(created),
        "Config": {"Labels": labels or {}},
        "State": {
            "Status": status,
            "StartedAt": stamp(started),
            "FinishedAt": stamp(finished),
            "ExitCode": code,
            "OOMKilled": oom,
            "Error": error,
        },
    }


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)), st.integers(0, 999))
def test_engine_times_parse_to_the_microsecond(moment: datetime, nanos: int) -> None:
    moment = moment.replace(tzinfo=UTC)
    assert parse_time(stamp(moment, nanos)) == moment
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time("garbage") is None and parse_time(3) is None


# Whole microseconds: the engine's times (and timedelta) have no finer grain, so a duration of
# 1e-241 s would vanish from the times the test builds while still counting in its expectations.
seconds = st.integers(min_value=0, max_value=10_000 * 10**6).map(lambda us: us / 10**6)


@given(
    status=st.sampled_from(["created", "running", "paused", "restarting", "exited", "dead"]),
    queued=seconds,
    ran=seconds,
    code=st.sampled_from([0, 1, 3, 125, 137, 255]),
    oom=st.booleans(),
    timeout=st.one_of(st.none(), seconds.filter(lambda s: s > 0)),
    start_timeout=st.one_of(st.none(), seconds.filter(lambda s: s > 0)),
    decided=st.one_of(st.none(), st.sampled_from(list(Ending))),
    monitored=st.booleans(),
    error=st.sampled_from(["", "exec: \"nope\": executable file not found"]),
)
def test_every_engine_state_reads_as_one_consistent_answer(
    status: str, queued: float, ran: float, code: int, oom: bool, timeout: float | None,
    start_timeout: float | None, decided: Ending | None, monitored: bool, error: str,
) -> None:  # fmt: skip
    created = NOW - timedelta(seconds=queued + ran)
    started = created + timedelta(seconds=queued) if status not in ("created",) else None
    finished = started + timedelta(seconds=ran) if started and status in ("exited", "dead") else None
    labels = {
        **({TIMEOUT_LABEL: f"{timeout:g}"} if timeout else {}),
        **({START_TIMEOUT_LABEL: f"{start_timeout:g}"} if start_timeout else {}),
    }
    attrs = inspect(
        status, created=created, started=started, finished=finished, code=code, oom=oom,
        error=error if status == "created" else "", labels=labels,
    )  # fmt: skip
    state = describe("c", attrs, now=NOW, node="here", ending=decided, monitored=monitored, log_tail="tail")
    # Ended exactly when it has an ending; a log tail only then.
    assert (state.phase is Phase.ENDED) == (state.ending is not None)
    assert (state.log_tail == "tail") == (state.phase is Phase.ENDED)
    assert state.queued_seconds is not None and state.queued_seconds >= 0
    assert state.run_seconds is None or state.run_seconds >= 0
    if status in ("running", "paused", "restarting"):
        assert state.phase is Phase.RUNNING and state.exit_code is None
    if status in ("exited", "dead"):
        assert state.phase is Phase.ENDED and state.ended_at is not None
        if decided is not None:
            assert state.ending is decided  # what its monitor did (a timeout, a cancel) comes first
        elif code == 0:
            assert state.ending is Ending.COMPLETED
        elif oom:
            assert state.ending is Ending.OOM_KILLED and "memory" in state.message
        elif code == 137 and timeout and ran >= timeout - 0.5:
            assert state.ending is Ending.TIMED_OUT  # read again after a restart: still a timeout
        else:
            assert state.ending is Ending.FAILED and state.exit_code == code
    if status == "created":
        assert state.started_at is None and state.run_seconds is None
        if state.ending is Ending.UNSCHEDULABLE:
            assert state.exit_code is None
        if decided is None and not error and not monitored and start_timeout and queued + ran > start_timeout:
            assert state.ending is Ending.UNSCHEDULABLE  # its start timeout passed while nobody watched
        if decided is None and not error and (monitored or not start_timeout):
            assert state.phase is Phase.QUEUED  # waiting for a slot; the monitor decides
