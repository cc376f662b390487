"""Placement of federation-wide schedules: what is accepted, and which instances match."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.errors import BadRequest
from orchestrator.federation.records import Placement
from orchestrator.scheduling.book import check_placement, due_key, labels_match, parse_due


def test_placement_forms() -> None:
    assert check_placement(None) == {"labels": {}}
    assert check_placement({}) == {"labels": {}}
    assert check_placement({"labels": {" role ": "central "}}) == {"labels": {"role": "central"}}


@pytest.mark.parametrize(
    "placement",
    [
        "central",
        ["role"],
        {"labels": "role=central"},
        {"labels": {"role": 1}},
        {"labels": {"": "x"}},
        {"labels": {"a=b": "c"}},
        {"labels": {"a": "b,c"}},
        {"site": "x"},
        {"labels": {str(i): "x" for i in range(33)}},
    ],
)
def test_bad_placements(placement: object) -> None:
    with pytest.raises(BadRequest):
        check_placement(placement)


def test_labels_match_every_wanted_label() -> None:
    mine = {"role": "central", "site": "zurich"}
    assert labels_match(mine, None) and labels_match(mine, Placement())
    assert labels_match(mine, Placement(labels={"role": "central"}))
    assert not labels_match(mine, Placement(labels={"role": "central", "site": "basel"}))
    assert not labels_match({}, Placement(labels={"role": "central"}))


def test_tick_keys_sort_by_time() -> None:
    moments = [datetime(2024, 1, 9, 23, 59, tzinfo=UTC), datetime(2024, 1, 10, 0, 0, tzinfo=UTC)]
    keys = [due_key(m) for m in moments]
    assert keys == sorted(keys) == ["2024-01-09T23:59:00Z", "2024-01-10T00:00:00Z"]
    assert [parse_due(f"/mao/v1/ticks/x/{k}") for k in keys] == moments
