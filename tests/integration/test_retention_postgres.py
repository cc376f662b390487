"""Retention on PostgreSQL: the same clean-up as tests/unit/test_retention.py (SQLite), on the
compose deployment's database."""

from __future__ import annotations

from tests.unit.test_retention import check_retention


async def test_old_runs_and_ticks_are_removed_on_postgres(module_database_url: str) -> None:
    await check_retention(module_database_url)
