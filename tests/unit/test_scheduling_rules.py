from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.errors import BadRequest
from orchestrator.scheduling.ticks import due_time, fire_times, make_trigger


@pytest.mark.parametrize("cron", ["cron-string", "* * * *", "* * * * * *", "61 * * * *", "", "   "])
def test_invalid_cron_is_a_400(cron: str) -> None:
    with pytest.raises(BadRequest) as caught:
        make_trigger(cron)
    assert caught.value.code == "invalid_cron"


@pytest.mark.parametrize("zone", ["Mars/Base", "../../etc/passwd", ""])
def test_invalid_timezone_is_a_400(zone: str) -> None:
    with pytest.raises(BadRequest) as caught:
        make_trigger("* * * * *", zone or "Nowhere/Land")
    assert caught.value.code == "invalid_timezone"


def test_fire_times_between() -> None:
    trigger = make_trigger("*/15 * * * *")
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    times = fire_times(trigger, start, start + timedelta(hours=1))
    assert [t.minute for t in times] == [15, 30, 45, 0]
    assert fire_times(trigger, start, start + timedelta(minutes=10)) == []


def test_timezone_is_respected() -> None:
    trigger = make_trigger("0 9 * * *", "Europe/Zurich")
    start = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    (first,) = fire_times(trigger, start, start + timedelta(days=1))
    assert first.astimezone(UTC).hour == 7  # 09:00 CEST


def test_due_time_is_the_fire_time_a_tick_stands_for() -> None:
    trigger = make_trigger("*/15 * * * *")
    due = datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert due_time(trigger, due + timedelta(milliseconds=3)) == due  # fired just after
    assert due_time(trigger, due - timedelta(milliseconds=300)) == due  # a clock a little early
    assert due_time(trigger, due + timedelta(minutes=14)) == due  # late, but the latest one passed
    hourly = make_trigger("0 9 * * *")
    late = datetime(2026, 1, 1, 11, 30, 5, 123456, tzinfo=UTC)  # nothing in the hour before
    assert due_time(hourly, late) == late.replace(microsecond=0)
