"""The decoding edge and the typed records: whatever bytes or JSON another member put into etcd,
reading them never raises; a record is taken only when it fits, numbers out of range are refused."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.pipeline import Dataset, Tool
from orchestrator.federation import records
from orchestrator.federation.ownership import LEGACY, Kind, Provenance, provenance
from orchestrator.federation.records import (
    Advance,
    AuditAnswer,
    LockHolder,
    MemberRecord,
    ScheduleRecord,
    TickRecord,
)
from orchestrator.federation.registry import Registered
from orchestrator.federation.seals import Sealer
from orchestrator.federation.values import MAX_NESTING, MAX_VALUE_BYTES, decode_value, warn_once
from orchestrator.merging.pins import compare, pin_value

MODELS = [MemberRecord, LockHolder, Advance, ScheduleRecord, TickRecord, AuditAnswer]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats()
    | st.text(max_size=30)
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_say_why(raw: bytes) -> None:
    decoded = decode_value(raw)
    assert (decoded.problem is None) or (decoded.value is None)
    if decoded.problem is None and decoded.value is not None:
        json.dumps(decoded.value, allow_nan=False).encode()  # what is taken can be sent on


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), "nested too deeply"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b"1" * 5000, "not JSON"),
        (b'"\\ud800"', "not valid Unicode"),
        (b'{"\\udc00": 1}', "not valid Unicode"),
        ('"x"'.encode("utf-16"), "not JSON"),
        (b"\xed\xa0\x80", "not JSON"),
        (b"{'repr': 1}", "not JSON"),
        (b'"' + b"x" * MAX_VALUE_BYTES + b'"', "more than"),
    ],
)
def test_what_is_refused(raw: bytes, problem: str) -> None:
    assert problem in str(decode_value(raw).problem)


def test_surrogate_pairs_and_depth_within_the_bound_are_fine() -> None:
    assert decode_value('"😀"'.encode()).value == "😀"
    assert decode_value(json.dumps("😀").encode()).value == "😀"  # written as a \\ud83d\\ude00 pair
    assert decode_value(b"[" * MAX_NESTING + b"]" * MAX_NESTING).problem is None


def test_one_warning_per_key_and_version(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            warn_once("/mao/v1/tools/\x1b[31mred", 7, "not JSON")
        warn_once("/mao/v1/tools/\x1b[31mred", 8, "not JSON")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\x1b" not in line for line in lines)  # control characters escaped


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(MODELS),
    json_like
    | st.dictionaries(
        st.sampled_from(sorted({f for m in MODELS for f in m.model_fields})), json_like, max_size=12
    ),
)
def test_parsing_a_record_never_raises(model: Any, value: Any) -> None:
    parsed = records.parse(model, "/mao/v1/x", 1, value)
    assert parsed is None or isinstance(parsed, model)


SCHEDULE = {
    "id": "a" * 32,
    "pipeline": "p",
    "cron": "* * * * *",
    "timezone": "UTC",
    "placement": {"labels": {}},
    "created_by": "fed-a",
    "created_at": "2026-01-01T00:00:00+00:00",
}


@pytest.mark.parametrize(
    "change",
    [
        {"priority": 10**30},
        {"priority": 1001},
        {"priority": "5"},
        {"priority": True},
        {"catchup_window": 10**12},
        {"catchup_window": 0},
        {"overlap": "sometimes"},
        {"created_at": "yesterday"},
        {"created_at": "2026-01-01T00:00:00"},  # no time zone
        {"created_by": "../x"},
        {"pipeline": "-rf"},
        {"placement": {"labels": {str(i): "x" for i in range(100)}}},
        {"trigger": {"dataset": ["x"]}},
        {"id": "not hex"},
    ],
)
def test_a_schedule_out_of_range_is_refused(change: dict[str, Any]) -> None:
    assert records.parse(ScheduleRecord, "/k", 1, SCHEDULE) is not None
    assert records.parse(ScheduleRecord, "/k", 1, {**SCHEDULE, **change}) is None


def test_an_advance_names_a_commit() -> None:
    assert records.parse(Advance, "/k", 1, {"commit": "ab" * 20}) is not None
    for bad in ("--upload-pack=x", "HEAD", "ab" * 19, "AB" * 20, 5):
        assert records.parse(Advance, "/k", 1, {"commit": bad}) is None


def test_ownership_of_a_stored_value() -> None:
    claims = Sealer("fed-a", None)
    assert provenance({"name": "t", "image": "i"}, Kind.TOOL, claims) == LEGACY
    owned = claims.seal({"name": "t", "image": "i", "owner": "fed-a", "revision": 2})
    assert provenance(owned, Kind.TOOL, claims) == Provenance("fed-a", 2, "fed-a", None, "claim")
    for bad in (
        {**owned, "owner": "../x"},
        {**owned, "revision": 0},
        {**owned, "revision": 2**60},
        {**owned, "revision": "2"},
    ):
        assert isinstance(provenance(bad, Kind.TOOL, claims), str)


def test_pins_compare_what_runs_and_who_owns_it() -> None:
    before = Registered(
        Tool(name="t", image="busybox:1"), Provenance("fed-a", 1, "fed-a", None, "signature"), 5
    )
    pin = pin_value("tool", before)
    assert compare("tool", "t", pin, before) == []
    described = Registered(
        Tool(name="t", image="busybox:1", description="now described"), before.provenance, 6
    )
    assert compare("tool", "t", pin, described) == []  # only what runs, and who owns it, are pinned
    swapped = Registered(
        Tool(name="t", image="evil:1"), Provenance("fed-b", 1, "fed-b", None, "signature"), 7
    )
    assert [c.sentence() for c in compare("tool", "t", pin, swapped)] == [
        "tool t: image busybox:1 -> evil:1",
        "tool t: owner fed-a -> fed-b",
    ]
    assert compare("tool", "t", pin, None)[0].current == "no longer registered"
    assert "not valid" in str(compare("tool", "t", pin, "its seal does not verify")[0].current)
    moved = Registered(Dataset(name="d", master="/srv/other.git"), LEGACY, 8)
    dataset_pin = pin_value("dataset", Registered(Dataset(name="d", master="/srv/d.git"), LEGACY, 1))
    assert [c.what for c in compare("dataset", "d", dataset_pin, moved)] == ["master"]
