from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.errors import BadRequest
from orchestrator.scheduling import fire_times, make_trigger


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
