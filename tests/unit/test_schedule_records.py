"""A federation-wide schedule read from etcd crosses into the schedulers as a typed ``ScheduleRecord``
(``ScheduleBook.check``), never as a dict: whatever another member wrote under a schedule's key, the
read gives the record (its fields as written) or None with one warning naming the key and why, and
never raises."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.federation import keys
from orchestrator.federation.etcd import Etcd
from orchestrator.federation.records import ScheduleRecord
from orchestrator.scheduling.book import ScheduleBook, listed
from tests.unit import test_etcd_records as etcd_records

ID = "ab" * 16
SCHEDULE: dict[str, Any] = {
    "id": ID,
    "pipeline": "p",
    "cron": "*/5 * * * *",
    "timezone": "Europe/Zurich",
    "placement": {"labels": {"role": "central"}},
    "overlap": "queue",
    "catchup": "all",
    "catchup_window": 3600,
    "priority": 5,
    "created_by": "fed-a",
    "created_at": "2026-01-01T00:00:00+00:00",
}
FIELDS = sorted(ScheduleRecord.model_fields)
REVISIONS = itertools.count(1)  # a new version per read: each refusal is said (warn_once)

# Anything JSON can hold (as test_etcd_records draws it), and values near the fields' own.
json_like = etcd_records.json_like | st.sampled_from(
    ["", "..", "-rf", "a" * 300, ID, "2026-01-01T00:00:00", "* * * * *", "skip", "all"]
)
# A valid schedule with some fields dropped, some replaced by anything JSON can hold, some added.
mutated = st.builds(
    lambda dropped, replaced, added: {
        **{k: v for k, v in SCHEDULE.items() if k not in dropped},
        **replaced,
        **added,
    },
    st.sets(st.sampled_from(sorted(SCHEDULE))),
    st.dictionaries(st.sampled_from(FIELDS), json_like, max_size=4),
    st.dictionaries(st.text(max_size=10), json_like, max_size=2),
)


@contextmanager
def warnings() -> Iterator[list[str]]:
    said: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    handler = Catch(logging.WARNING)
    logger = logging.getLogger("orchestrator")
    logger.addHandler(handler)
    try:
        yield said
    finally:
        logger.removeHandler(handler)


def book() -> ScheduleBook:
    return ScheduleBook(cast(Etcd, object()))  # ``check`` reads no etcd


@settings(max_examples=300, deadline=None)
@given(mutated | json_like)
def test_any_schedule_value_is_the_record_or_refused_with_a_reason(value: Any) -> None:
    key, revision = keys.schedule(ID), next(REVISIONS)
    with warnings() as said:
        record = book().check(key, revision, value)
    if record is None:
        assert len(said) == 1, said
        assert key in said[0] and f"version {revision}" in said[0]
        assert said[0].split(": ", 1)[1].strip()  # the reason, not only the key
    else:
        assert isinstance(record, ScheduleRecord) and said == []
        assert isinstance(value, dict) and record.id == value["id"] == ID
        dumped = record.model_dump()
        for field in set(FIELDS) & set(value):  # what was written is what is read
            written = value[field]
            assert dumped[field] == written or (isinstance(written, dict) and field in ("placement", "trigger"))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40).filter(lambda other: other != ID))
def test_a_schedule_under_another_id_s_key_is_refused(other: str) -> None:
    key = keys.schedule(ID).removesuffix(ID) + other
    with warnings() as said:
        assert book().check(key, next(REVISIONS), SCHEDULE) is None
    assert len(said) == 1 and "not its key's" in said[0]


def test_a_valid_schedule_is_typed_and_lists_as_it_always_did() -> None:
    record = book().check(keys.schedule(ID), next(REVISIONS), SCHEDULE)
    assert record is not None and record.placement.labels == {"role": "central"}
    assert (record.overlap, record.catchup, record.catchup_window, record.priority) == ("queue", "all", 3600, 5)
    shown = listed(record, "2026-01-01T00:05:00+01:00", [])
    assert shown == {
        **{k: SCHEDULE[k] for k in ("id", "pipeline", "cron", "timezone", "placement", "overlap", "priority")},
        "catchup": "all",
        "catchup_window": 3600,
        "created_by": "fed-a",
        "created_at": "2026-01-01T00:00:00+00:00",
        "next_run_time": "2026-01-01T00:05:00+01:00",
        "ticks": [],
    }


def test_an_older_record_keeps_its_defaults() -> None:
    """Written before overlap, priority and catch-up existed: read with none of them."""
    old = {k: SCHEDULE[k] for k in ("id", "pipeline", "cron", "timezone", "created_by", "created_at")}
    record = book().check(keys.schedule(ID), next(REVISIONS), old)
    assert record is not None
    assert (record.overlap, record.catchup, record.priority, record.trigger) == (None, None, None, None)
    shown = listed(record, None, [])
    assert (shown["overlap"], shown["priority"], shown["catchup"], shown["placement"]) == (
        "skip",
        0,
        None,
        {"labels": {}},
    )
