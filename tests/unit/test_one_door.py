"""Every run is asked of the one door (``orchestrator/runs/door.py``), read from the code itself: a
new caller that starts a run past it (the run engine's ``start`` or ``queue_many``, a run row written
directly, a ticket handed to admission) fails here, with the place named, and every cause of a run
has a caller that asks the door.

The check is syntactic (no types): the engine's ``start`` takes a pipeline and a trigger, so any
``.start(...)`` with two arguments or more counts as starting a run, whatever the receiver is called
(an alias of the runner is caught too); a service's ``start()`` takes none. The few other
``start``s with arguments are named in ``OTHER_STARTS``."""

from __future__ import annotations

import ast
import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain import causes

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "orchestrator"
DOOR = "orchestrator/runs/door.py"
# Where a run is recorded and handed to admission: the engine (its launcher records and queues runs,
# its stopper puts back in the queue the runs a failed cancel dropped), its store and its admission.
ENGINE = {
    "orchestrator/runs/engine.py",
    "orchestrator/runs/launch.py",
    "orchestrator/runs/stopping.py",
    "orchestrator/store/runs.py",
    "orchestrator/runs/admission.py",
}
# Receivers whose ``start(...)`` with arguments is not the engine's (``Backfills.start(request, by)``:
# it asks the door itself).
OTHER_STARTS = {"backfills"}
# The receivers that hold the engine, by the names the code gives it.
ENGINE_NAMES = {"runner", "_runner", "runs", "engine"}


@dataclass(frozen=True)
class Bypass:
    where: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.code}"


def last_name(node: ast.expr) -> str | None:
    """The receiver's last identifier: ``runner`` of ``self.node.runner``, ``r`` of ``r``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return last_name(node.func)
    return None


def bypasses(source: str, where: str) -> list[Bypass]:
    """The places in ``source`` (module ``where``, relative to the repository) that start a run
    without the door."""
    found: list[Bypass] = []

    def flag(node: ast.AST) -> None:
        found.append(Bypass(where, getattr(node, "lineno", 0), ast.unparse(node)[:120]))

    tree = ast.parse(source)
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, receiver = node.func.attr, last_name(node.func.value)
            arguments = len(node.args) + len(node.keywords)
            if where != DOOR and (
                attr == "queue_many" or (attr == "start" and arguments >= 2 and receiver not in OTHER_STARTS)
            ):
                flag(node)
            elif where not in ENGINE and (
                attr == "create_many"  # run rows (RunRecords), a backfill's with them
                or (attr == "create" and receiver is not None and receiver.endswith("records"))
                or (
                    attr in {"reserve", "enqueue"} and receiver is not None and receiver.endswith("admission")
                )
            ):
                flag(node)
        elif isinstance(node, ast.Attribute) and id(node) not in calls and where != DOOR:
            # The engine's start taken without calling it (``start = self.runner.start``).
            if node.attr == "queue_many" or (node.attr == "start" and last_name(node.value) in ENGINE_NAMES):
                flag(node)
    return found


def modules() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_only_the_door_starts_a_run() -> None:
    found = [b for where, source in modules().items() for b in bypasses(source, where)]
    assert not found, (
        "these start a run without the door: ask runs/door.py (request_run(RunAsk(pipeline, cause))) "
        "instead, adding a cause to domain/causes.py if it is a new one:\n" + "\n".join(map(str, found))
    )


def test_the_door_is_where_runs_start() -> None:
    """The check above is not vacuous: the door itself calls the engine."""
    tree = ast.parse((ROOT / DOOR).read_text())
    called = {
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and last_name(n.func.value) == "runs"
    }
    assert {"start", "queue_many"} <= called


def test_every_cause_has_a_caller_that_asks_the_door() -> None:
    """Each cause of ``domain/causes.py`` is built outside the door, in a module that asks it."""
    names = {c.__name__ for c in (causes.Manual, causes.CronTick, causes.FederationTick, causes.CatchUp,
                                  causes.DataTrigger, causes.Backfill, causes.Retry)}  # fmt: skip
    assert names == {c.__name__ for c in get_args(causes.Cause)}
    asked: set[str] = set()
    for where, source in modules().items():
        if where in {DOOR, "orchestrator/domain/causes.py"} or "request_run(" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
                asked.add(node.func.id)
    assert asked == names, f"no caller asks the door with {sorted(names - asked)}"


# The check itself, on generated code: how a receiver is named does not matter.
identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s)
)
receivers = st.lists(identifiers, min_size=1, max_size=4).map(".".join)


@given(receiver=receivers, args=st.integers(2, 5))
def test_an_engine_start_is_caught_under_any_name(receiver: str, args: int) -> None:
    call = f"async def f():\n    await {receiver}.start({', '.join(['x'] * args)})\n"
    found = bypasses(call, "orchestrator/api/new.py")
    assert bool(found) == (receiver.split(".")[-1] not in OTHER_STARTS)
    assert bypasses(call, DOOR) == []


@given(receiver=receivers)
def test_queue_many_and_run_rows_are_caught_anywhere_else(receiver: str) -> None:
    assert bypasses(f"{receiver}.queue_many('p', 'backfill', [])", "orchestrator/scheduling/new.py")
    assert bypasses(f"{receiver}.create_many([run])", "orchestrator/scheduling/new.py")
    assert bypasses(f"{receiver}.create_many([run])", "orchestrator/runs/engine.py") == []


@given(receiver=receivers)
def test_a_service_start_is_not_a_run(receiver: str) -> None:
    assert bypasses(f"async def f():\n    await {receiver}.start()\n", "orchestrator/node.py") == []


def test_other_bypasses_are_caught() -> None:
    where = "orchestrator/scheduling/new.py"
    for code in (
        "start = self.runner.start",
        "records.create(run_id, pipeline, 'manual', nodes, branches)",
        "self.runner.admission.enqueue([ticket])",
        "node.runner.admission.reserve(ticket, busy)",
        "r = node.runner\nr.start('p', trigger='manual')",
    ):
        assert bypasses(code, where), code
    assert bypasses("await the_node.backfills.start(body, by=who)", "orchestrator/api/pipelines.py") == []
