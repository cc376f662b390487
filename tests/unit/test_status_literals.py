"""No run, step, attempt, backfill or tick status is spelled as a string outside ``domain/states.py``:
code names it by its enum (``RunStatus.FAILED``), so a renamed or new status is found by the type
checker instead of by a user. Fails on any string constant in ``orchestrator/`` whose whole value is
one of the statuses' words, except:

- a dict key (a JSON field name such as a count of running objects, never a status value);
- an enum member's definition (a named constant: the point of the rule);
- the allow-list below, each entry with the reason the word is not one of our statuses.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from orchestrator.domain.states import (
    AttemptStatus,
    BackfillStatus,
    MergeState,
    RunStatus,
    StepStatus,
    TickOutcome,
)

ROOT = Path(__file__).resolve().parents[2]
STATES = "orchestrator/domain/states.py"
# Every state word there is, from the enums themselves: a new status is checked the day it lands.
WORDS = frozenset(
    member.value
    for kind in (RunStatus, StepStatus, AttemptStatus, MergeState, TickOutcome, BackfillStatus)
    for member in kind
)

# (file, word): how many times it may appear, and why it is not one of our statuses.
ALLOWED: dict[tuple[str, str], int] = {
    # Foreign engines' own words (Docker swarmkit task states, Docker container states), as named
    # constants of their module where they repeat.
    ("orchestrator/executors/swarm_watch.py", "running"): 1,  # TASK_RUNNING
    ("orchestrator/executors/swarm_watch.py", "failed"): 1,  # TASK_FAILED
    ("orchestrator/executors/swarm_watch.py", "pending"): 1,  # WAITING: swarmkit's "pending"
    ("orchestrator/executors/swarm_objects.py", "running"): 1,  # a container's State (Docker)
    # Not a status value: field names and message texts.
    ("orchestrator/executors/docker.py", "running"): 1,  # a field of the executor's health answer
    ("orchestrator/executors/docker.py", "cancelled"): 1,  # an End's message text
    ("orchestrator/executors/kubernetes.py", "cancelled"): 1,  # an End's message text
    ("orchestrator/executors/slurm_answers.py", "cancelled"): 1,  # a Verdict's message text
    ("orchestrator/executors/slurm_ends.py", "cancelled"): 1,  # an End's message text
    ("orchestrator/executors/swarm.py", "cancelled"): 2,  # an End's message text
    ("orchestrator/executors/slurm_answers.py", "image_unavailable"): 1,  # a Report field's name
    # MAO's own mark on a Slurm job it ended for not being scheduled (the job's comment), read back
    # by job_end: a word in Slurm's record, not an attempt's status.
    ("orchestrator/executors/slurm_answers.py", "unschedulable"): 1,
    ("orchestrator/api/openapi.py", "conflict"): 1,  # HTTP 409's description text
    ("orchestrator/merging/voting.py", "merged"): 1,  # a log message's text
    # A tick another instance claimed: a label of the mao_ticks metric, not an attempt's ``lost``.
    ("orchestrator/scheduling/federation.py", "lost"): 1,
    # A door decision's kind, spelled in a Literal type (domain.causes: Fired/Queued/Skipped).
    ("orchestrator/domain/causes.py", "queued"): 2,
    ("orchestrator/domain/causes.py", "skipped"): 2,
    ("orchestrator/domain/causes.py", "fired"): 2,
    # An audit's own state (pending, then decided): not a run's.
    ("orchestrator/audit/service.py", "pending"): 2,
    # runs/, scheduling/ and store/: none left (issue 19).
}


def _is_enum(node: ast.ClassDef) -> bool:
    names = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases]
    return any(name.endswith("Enum") for name in names)


def status_words(source: str) -> Counter[str]:
    """The status words ``source`` spells as whole string constants, outside dict keys and enum
    member definitions."""
    tree = ast.parse(source)
    exempt: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            exempt.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.ClassDef) and _is_enum(node):
            exempt.update(id(st.value) for st in node.body if isinstance(st, ast.Assign))
    return Counter(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in WORDS and id(node) not in exempt
    )


def test_no_status_literal_outside_the_states_module() -> None:
    found: dict[tuple[str, str], int] = {}
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name == STATES:
            continue
        for word, count in status_words(path.read_text()).items():
            found[(name, word)] = count
    over = {
        f"{name}: {word!r} x{count}": ALLOWED.get((name, word), 0)
        for (name, word), count in found.items()
        if count > ALLOWED.get((name, word), 0)
    }
    assert not over, (
        "status words spelled as strings (use domain.states' enums; a foreign engine's own word goes "
        f"in ALLOWED with why): {over}"
    )


def test_the_rule_sees_what_it_must_and_spares_what_it_may() -> None:
    seen = status_words(
        'x = "failed"\n'
        'if s == "running": pass\n'
        'd = {"queued": 1}\n'  # a field name
        "class K(StrEnum):\n    DONE = 'succeeded'\n"  # a named constant
        '"""A docstring that says failed."""\n'
        "y = 'a failed step'\n"
    )
    assert seen == Counter({"failed": 1, "running": 1})
