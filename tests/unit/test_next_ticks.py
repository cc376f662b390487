"""The next ticks of a schedule listing (``GET /schedules?next=N``, ``GET /federation/schedules?next=N``):
the same instants the schedulers fire at (``fire_times``), daylight-saving rule included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduling.ticks import fire_times, make_trigger, next_ticks, with_next_ticks

CRONS = st.sampled_from(["* * * * *", "*/15 * * * *", "30 2 * * *", "0 3 * * 1", "0 0 29 2 *", "5 4 1 * *"])
ZONES = st.sampled_from(["UTC", "Europe/Zurich", "America/New_York", "Australia/Lord_Howe"])
MOMENTS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@settings(max_examples=150, deadline=None)
@given(CRONS, ZONES, MOMENTS, st.integers(0, 6))
def test_next_ticks_are_the_fire_times(cron: str, zone: str, now: datetime, count: int) -> None:
    ticks = next_ticks(cron, zone, now, count)
    assert len(ticks) == count
    assert ticks == fire_times(make_trigger(cron, zone), now, now + timedelta(days=366 * 30), limit=count)
    assert all(t > now for t in ticks) and ticks == sorted(set(ticks))


def test_listings_get_next_ticks() -> None:
    schedules = [
        {"id": "1", "cron": "0 3 * * *", "timezone": "UTC"},
        {"id": "2", "cron": "", "timezone": "UTC", "trigger": {"dataset": "raw"}},
        {"id": "3", "cron": "not a cron", "timezone": "UTC"},  # written by another version: no ticks, no 400
        {"id": "4", "cron": None, "timezone": None, "trigger": {"dataset": "raw"}},
    ]
    assert with_next_ticks(schedules, 0) is schedules
    listed = with_next_ticks(schedules, 3)
    first = [datetime.fromisoformat(t) for t in listed[0]["next_ticks"]]
    assert len(first) == 3 and all(t.hour == 3 and t.minute == 0 for t in first)
    assert [b - a for a, b in zip(first, first[1:], strict=False)] == [timedelta(days=1)] * 2
    assert [s["next_ticks"] for s in listed[1:]] == [[], [], []]
