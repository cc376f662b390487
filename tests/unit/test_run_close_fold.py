"""The end of a run's last step is written by the run's close, in its transaction (``Recorder.set_step``
leaves it for ``Recorder.close``), and the close returns the record as read in that transaction.
Generated: any mix of step ends, in any order. The record after the close is what writing each end
on its own gives (statuses, errors, merges, attempts), the record the close returns is the record
as a later read finds it, and a run left for the next start (shutting down) still has its last
step's end written (``Recorder.write_left``)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.pipeline import Pipeline
from orchestrator.domain.states import AttemptStatus, MergeState, RunStatus, StepStatus
from orchestrator.runs.active import ActiveRun
from orchestrator.runs.recording import Recorder
from orchestrator.store import Store
from orchestrator.store.run_changes import AttemptEnded, NewAttempt, RunChange
from orchestrator.store.runs import RunRecords
from orchestrator.store.tables import utcnow

ENDS = ["succeeded", "failed", "cached", "skipped"]


def pipeline(n: int) -> Pipeline:
    steps = [{"name": f"s{i}", "tool": "t", "output_dataset": f"d{i}"} for i in range(n)]
    return Pipeline.model_validate({"name": "p", "steps": steps})


async def end_step(recorder: Recorder, records: RunRecords, run: ActiveRun, name: str, end: str) -> None:
    """As the engine ends a step: through its attempt (succeeded, failed) or without one."""
    now = utcnow()
    if end in ("succeeded", "failed"):
        attempt = await records.start_attempt(NewAttempt(run.id, name, 1, "t", f"o-{run.id}-{name}"), step_started=now)
        run.note(name, StepStatus.RUNNING, started_at=now)
        if end == "succeeded":
            run.attempt_ends[name] = AttemptEnded(attempt, AttemptStatus.SUCCEEDED, exit_code=0, image_id="sha256:i")
            await recorder.set_step(
                run, name, StepStatus.SUCCEEDED, ended_at=now, merge_state=MergeState.MERGED, merge_commit="m" * 40
            )
        else:
            await records.end_attempt(AttemptEnded(attempt, AttemptStatus.FAILED, exit_code=3, error="exit 3"))
            await recorder.set_step(run, name, StepStatus.FAILED, error="exit 3", ended_at=now)
    elif end == "cached":
        await recorder.set_step(run, name, StepStatus.CACHED, output_commit="c" * 40, error=None)
    else:
        await recorder.set_step(run, name, StepStatus.SKIPPED, error="skipped: a need did not succeed")


def shape(record: dict[str, Any]) -> dict[str, Any]:
    """What the record says, without the times the close takes itself."""
    return {
        "status": record["status"],
        "error": record["error"],
        "steps": [
            (s["name"], s["status"], s["error"], s.get("merge"), [(a["status"], a["exit_code"]) for a in s["attempts"]])
            for s in record["steps"]
        ],
    }


async def scenario(tmp: Path, ends: list[str], order: list[int], shutting_down: bool) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp / 'db.sqlite'}")
    await store.start()
    try:
        records = RunRecords(store)
        p = pipeline(len(ends))
        names = [s.name for s in p.steps]
        results: list[dict[str, Any]] = []
        for fold in (True, False):  # through the close's transaction; each end on its own
            run_id = f"r-{fold}"
            await records.create(run_id, p, "manual", p.graph(), [f"b{i}" for i in range(len(ends))])
            await records.change_run(RunChange(run_id, RunStatus.RUNNING, started_at=utcnow()))
            run = ActiveRun(run_id, p, p.graph(), RunStatus.RUNNING, dict.fromkeys(names, StepStatus.PENDING))
            recorder = Recorder(records)
            for i in order:
                if not fold and i == order[-1]:
                    run.detaching = True  # a shutdown's run writes every end on its own
                await end_step(recorder, records, run, names[i], ends[i])
            if fold:  # the last end is left for the close, the others were written
                assert run.left_for_close == {names[order[-1]]}
                still = await records.get(run_id)
                assert still is not None
                assert {s.name for s in still.steps if s.status in ("pending", "running")} == {names[order[-1]]}
            if fold and shutting_down:
                run.detaching = True
                await recorder.write_left(run)
                left = await records.get(run_id)
                assert left is not None and all(s.status not in ("pending", "running") for s in left.steps)
                run.detaching = False
            run.detaching = False
            ended = await recorder.close(run, None)
            assert ended is not None
            again = await records.get(run_id)
            assert again is not None and ended.to_json() == again.to_json()
            assert run.left_for_close == set()
            results.append(shape(ended.to_json()))
        assert results[0] == results[1]
        expected = "succeeded" if all(e in ("succeeded", "cached") for e in ends) else "failed"
        assert results[0]["status"] == expected
    finally:
        await store.close()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(ENDS), min_size=1, max_size=4).flatmap(
        lambda ends: st.tuples(st.just(ends), st.permutations(range(len(ends))), st.booleans())
    )
)
def test_the_last_end_is_the_close_s_and_the_record_is_the_same(case: tuple[list[str], list[int], bool]) -> None:
    ends, order, shutting_down = case
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp), ends, list(order), shutting_down))
