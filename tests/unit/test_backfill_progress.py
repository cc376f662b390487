"""A backfill's progress and status, from its runs' states (generated): every run counted once, and
the status read from the counts as docs/schedules.md says."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.states import RunStatus
from orchestrator.store.backfills import backfill_status, progress_of

STATES = st.lists(st.sampled_from([s.value for s in RunStatus]), min_size=1, max_size=40)


@given(STATES, st.booleans())
def test_each_run_counts_once_and_the_status_follows(states: list[str], cancelled: bool) -> None:
    progress = progress_of(dict(Counter(states)), len(states))
    counts = progress.as_dict()
    assert sum(counts[k] for k in ("done", "failed", "cancelled", "queued", "running")) == len(states)
    assert counts["ended"] == sum(s in ("succeeded", "failed", "cancelled") for s in states)
    assert counts["running"] == sum(s in ("pending", "running") for s in states)
    status = backfill_status(progress, cancelled)
    if any(s in ("queued", "pending", "running") for s in states):
        started = any(s != "queued" for s in states)
        assert status == ("running" if started else "queued")
    elif cancelled:
        assert status == "cancelled"
    elif any(s in ("failed", "cancelled") for s in states):
        assert status == "failed"
    else:
        assert status == "succeeded"


def test_a_state_this_release_does_not_know_counts_in_the_total_only() -> None:
    progress = progress_of({"succeeded": 2, "paused": 1}, 3)
    assert (progress.total, progress.done, progress.ended) == (3, 2, 2)
