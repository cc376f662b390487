"""The run read models' JSON (``RunView.to_json()``): the shape ``GET /runs`` and ``GET /runs/{id}``
answered when the store built dictionaries itself, key for key and in order, for any mix of the
optional parts (a backfill, a data trigger, a retry reason, shards, log tails)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.states import AttemptStatus, RunStatus, StepStatus
from orchestrator.store.run_views import RunView
from orchestrator.store.tables import AttemptRow, RunRow, RunStepRow

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def rows(
    backfill: bool, data: bool, reason: bool, shard: bool, shards: bool, needs: bool, ended: bool
) -> tuple[RunRow, list[RunStepRow], list[AttemptRow]]:
    run = RunRow(
        id="r1", pipeline="p", trigger="data" if data else "manual", status=RunStatus.FAILED, error="boom",
        schedule_id=None, priority=None, version=3, backfill_id="b1" if backfill else None, retry_of=None,
        tick_at=None, trigger_dataset="d" if data else None, trigger_commit="c" * 40 if data else None,
        created_at=T0, started_at=T0, ended_at=T0 + timedelta(seconds=1.5) if ended else None,
    )  # fmt: skip
    steps = [
        RunStepRow(
            run_id="r1", position=i, name=name, tool="t", image=None, input_dataset=None,
            output_dataset="o", branch="r1-" + name, status=status, exit_code=None, image_id=None,
            input_commit=None, output_commit=None, merge_commit=None, merge_state=None, changed=None,
            conflicts=None, started_at=T0, ended_at=T0 if ended else None, log_tail=None, error=None,
            insights=None, needs=(["a"] if i else []) if needs else None, reason="why" if reason else None,
            shards={"count": 2} if shards else None,
        )  # fmt: skip
        for i, (name, status) in enumerate([("a", StepStatus.SUCCEEDED), ("b", StepStatus.FAILED)])
    ]
    attempts = [
        AttemptRow(
            id=1, run_id="r1", step="b", attempt=1, shard=1 if shard else None, speculative=False, tool="t",
            container="c", image_id="sha", status=AttemptStatus.FAILED, backend="local", engine_id=None,
            node=None, queued_seconds=None, exit_code=3, started_at=T0, ended_at=None, error="exit 3",
        )  # fmt: skip
    ]
    return run, steps, attempts


def expected(
    run: RunRow, steps: list[RunStepRow], attempts: list[AttemptRow], with_logs: bool
) -> dict[str, Any]:
    """The shape as ``store.runs.run_to_dict`` built it before the read models."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    def duration(start: datetime | None, end: datetime | None) -> float | None:
        return round((end - start).total_seconds(), 3) if start and end else None

    def attempt(a: AttemptRow) -> dict[str, Any]:
        return {
            "attempt": a.attempt, "tool": a.tool, "image_id": a.image_id, "status": a.status,
            "exit_code": a.exit_code, "started_at": iso(a.started_at), "ended_at": iso(a.ended_at),
            "error": a.error, "backend": a.backend, "node": a.node, "queued_seconds": a.queued_seconds,
            **({"shard": a.shard, "speculative": a.speculative} if a.shard is not None else {}),
        }  # fmt: skip

    return {
        "id": run.id, "pipeline": run.pipeline, "trigger": run.trigger, "status": run.status,
        "error": run.error, "schedule_id": run.schedule_id, "priority": run.priority or 0,
        "version": run.version, **({"backfill_id": run.backfill_id} if run.backfill_id else {}),
        "retry_of": run.retry_of, "tick_at": iso(run.tick_at),
        **({"trigger_dataset": run.trigger_dataset, "trigger_commit": run.trigger_commit}
           if run.trigger_dataset else {}),
        "created_at": iso(run.created_at), "started_at": iso(run.started_at), "ended_at": iso(run.ended_at),
        "duration": duration(run.started_at, run.ended_at),
        "steps": [
            {
                "position": s.position, "name": s.name,
                "needs": s.needs if s.needs is not None else [p.name for p in steps if p.position == s.position - 1],
                "tool": s.tool, "image": s.image, "status": s.status, "exit_code": s.exit_code,
                "image_id": s.image_id, "input_dataset": s.input_dataset, "input_commit": s.input_commit,
                "output_dataset": s.output_dataset, "branch": s.branch, "output_commit": s.output_commit,
                "merge_commit": s.merge_commit, "merge": s.merge_state, "changed": s.changed,
                "conflicts": s.conflicts or [], "started_at": iso(s.started_at), "ended_at": iso(s.ended_at),
                "duration": duration(s.started_at, s.ended_at), "error": s.error, "insights": s.insights,
                **({"reason": s.reason} if s.reason else {}),
                "attempts": [attempt(a) for a in attempts if a.step == s.name],
                **({"shards": s.shards} if s.shards is not None else {}),
                **({"log_tail": s.log_tail or ""} if with_logs else {}),
            }
            for s in steps
        ],
    }  # fmt: skip


@given(st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.booleans())  # fmt: skip
def test_to_json_is_the_api_shape_key_for_key_in_order(
    backfill: bool, data: bool, reason: bool, shard: bool, shards: bool, needs: bool, ended: bool, logs: bool
) -> None:
    run, steps, attempts = rows(backfill, data, reason, shard, shards, needs, ended)
    got = RunView.of(run, steps, attempts, with_logs=logs).to_json()
    want = expected(run, steps, attempts, logs)
    assert got == want
    assert list(got) == list(want) and [list(s) for s in got["steps"]] == [list(s) for s in want["steps"]]
    assert [type(s["status"]) for s in got["steps"]] == [str, str]  # plain strings, not enum members


def test_a_view_is_frozen_and_read_by_attribute() -> None:
    run = RunView.of(*rows(False, False, False, False, False, True, True))
    assert run.status is RunStatus.FAILED and run.duration == 1.5
    assert run.step("b") is not None and run.step("b").attempts[0].status is AttemptStatus.FAILED  # type: ignore[union-attr]
    assert run.step("nope") is None
    try:
        run.status = RunStatus.SUCCEEDED  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a read model must be frozen")
