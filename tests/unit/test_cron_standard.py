"""Cron expressions mean what crontab(5) says: weekdays count from Sunday (0 and 7), and a day matches
day of month OR day of week when both are restricted. Checked against a brute-force reading of the
manual page over generated expressions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduling.ticks import make_trigger

NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _numbers(field: str, low: int, high: int, names: tuple[str, ...] = ()) -> set[int]:
    """The values a crontab(5) field allows (the reference, written from the manual page)."""

    def value(text: str) -> int:
        return names.index(text.lower()) if text.lower() in names else int(text)

    allowed: set[int] = set()
    for item in field.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (value(part) for part in span.split("-"))
        else:
            first = value(span)
            last = high if step else first
        allowed.update(range(first, last + 1, int(step or 1)))
    return allowed


def _matches(day: datetime, dom: str, dow: str) -> bool:
    days = _numbers(dom, 1, 31)
    weekdays = {d % 7 for d in _numbers(dow, 0, 7, NAMES)}
    weekday = (day.weekday() + 1) % 7  # Python: Monday 0; crontab: Sunday 0
    in_month, in_week = day.day in days, weekday in weekdays
    if dom.startswith("*") or dow.startswith("*"):
        return in_month and in_week
    return in_month or in_week


weekday_item = st.one_of(
    st.integers(0, 7).map(str),
    st.sampled_from(NAMES + ("MON", "Fri")),
    st.tuples(st.integers(0, 6), st.integers(0, 7))
    .filter(lambda p: p[0] <= p[1])
    .map(lambda p: f"{p[0]}-{p[1]}"),
    st.integers(1, 7).map(lambda s: f"*/{s}"),
    st.tuples(st.integers(0, 6), st.integers(1, 3)).map(lambda p: f"{p[0]}-6/{p[1]}"),
)
weekday_field = st.one_of(st.just("*"), st.lists(weekday_item, min_size=1, max_size=3).map(",".join))
day_field = st.sampled_from(["*", "1", "13", "1-7", "*/10", "15,28", "31"])


@settings(max_examples=150, deadline=None)
@given(
    dom=day_field,
    dow=weekday_field,
    start=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_days_as_crontab_means_them(dom: str, dow: str, start: datetime) -> None:
    trigger = make_trigger(f"0 3 {dom} * {dow}")
    moment = start.replace(tzinfo=UTC)
    expected: list[datetime] = []
    day = moment.replace(hour=3, minute=0, second=0, microsecond=0)
    if day <= moment:
        day += timedelta(days=1)
    while len(expected) < 12:
        if _matches(day, dom, dow):
            expected.append(day)
        day += timedelta(days=1)
    got = []
    for _ in range(12):
        moment = trigger.next_after(moment)
        got.append(moment)
    assert got == expected


def test_monday_is_one_and_sunday_zero_or_seven() -> None:
    sunday = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert make_trigger("0 3 * * 1").next_after(sunday) == datetime(2026, 12, 7, 3, tzinfo=UTC)
    assert make_trigger("0 3 * * 0").next_after(sunday) == datetime(2026, 12, 13, 3, tzinfo=UTC)
    assert make_trigger("0 3 * * 7").next_after(sunday) == datetime(2026, 12, 13, 3, tzinfo=UTC)
