"""The frozen ``Schedule`` and ``Tick`` the store returns answer the JSON the API always answered: for
any row, ``public()`` is what ``schedule_to_dict`` (and the ticks' dict) gave before the model existed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.store.schedules import schedule_of
from orchestrator.store.tables import ScheduleRow


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def before(row: ScheduleRow) -> dict[str, Any]:
    """``store.schedule_to_dict`` as it was (commit a8be14e)."""
    return {
        "id": row.id,
        "pipeline": row.pipeline,
        "cron": row.cron,
        "timezone": row.timezone,
        "created_at": _iso(row.created_at),
        "last_tick_at": _iso(row.last_tick_at),
        "overlap": row.overlap or "skip",
        "priority": row.priority or 0,
        **({"trigger": {"dataset": row.dataset}} if row.dataset else {}),
        **(
            {"catchup": row.catchup or "latest", "catchup_window": row.catchup_window}
            if not row.dataset
            else {}
        ),
    }


_moments = st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(UTC))


@given(
    cron=st.sampled_from(["", "* * * * *", "0 3 * * 1"]),
    last=st.none() | _moments,
    created=_moments,
    overlap=st.sampled_from([None, "skip", "allow", "queue", "replace"]),
    catchup=st.sampled_from([None, "none", "latest", "all"]),
    window=st.none() | st.integers(1, 366 * 86400),
    dataset=st.sampled_from([None, "", "raw"]),
    priority=st.none() | st.integers(-100, 100),
)
def test_public_is_the_dict_the_api_answered(
    cron: str,
    last: datetime | None,
    created: datetime,
    overlap: str | None,
    catchup: str | None,
    window: int | None,
    dataset: str | None,
    priority: int | None,
) -> None:
    row = ScheduleRow(
        id="s1", pipeline="p", cron=cron, timezone="UTC", created_at=created, last_tick_at=last,
        overlap=overlap, catchup=catchup, catchup_window=window, dataset=dataset, priority=priority,
    )  # fmt: skip
    schedule = schedule_of(row)
    assert schedule.public() == before(row)
    assert schedule.is_trigger == bool(dataset)
