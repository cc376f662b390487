"""The run grid's query (``orchestrator/store/grid.py``) on SQLite against a naive computation, over
generated run histories: last N per pipeline, ties in creation time, filters, rows for pipelines
without runs, step order (definition first), attempt counts, queue time and duration."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings

from tests.grid_cases import Case, GridChecker, cases


@pytest.fixture(scope="module")
def checker() -> Iterator[GridChecker]:
    folder = Path(tempfile.mkdtemp(prefix="mao-grid-"))
    checker = GridChecker(f"sqlite+aiosqlite:///{folder / 'grid.db'}")
    yield checker
    checker.close()


@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_grid_matches_a_naive_computation(checker: GridChecker, case: Case) -> None:
    checker.check(case)
