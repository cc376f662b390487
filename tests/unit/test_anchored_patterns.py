"""A validator written ``^...$`` and called with ``.match`` lets a value with a trailing newline
through (``$`` matches before a final newline): a node label, a Slurm variable's name, a commit
trailer's key, an announced commit id from another member. Validators use ``fullmatch``; this test
finds any anchored pattern called with ``match`` again (hypothesis found the first, in a Swarm
placement value)."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.executors.swarm_service import placement_problem

ROOT = Path(__file__).resolve().parents[2]
COMPILED = re.compile(r"""^\s*(\w+)\s*=\s*re\.compile\(r?["'](\^.*\$)["']\)""", re.M)


def test_no_anchored_pattern_is_called_with_match() -> None:
    found = []
    for path in sorted((ROOT / p) for p in ("orchestrator", "executor", "ctl") for _ in [0]):
        for source in path.rglob("*.py"):
            text = source.read_text()
            for name, _pattern in COMPILED.findall(text):
                found += [f"{source.relative_to(ROOT)}: {name}.match(" for _ in re.findall(rf"\b{name}\.match\(", text)]
    assert found == []


@given(key=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), value=st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))
def test_a_placement_with_a_trailing_newline_is_refused(key: str, value: str) -> None:
    assert placement_problem({key: value}) is None
    assert placement_problem({key + "\n": value}) is not None
    assert placement_problem({key: value + "\n"}) is not None
