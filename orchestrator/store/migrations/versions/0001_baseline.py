"""Baseline: the schema as create_all made it before migrations existed (f8a48b9).

A database made by that version has these tables but no alembic_version: ``store.migrate`` stamps it
at this revision instead of running it, then upgrades from here.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from orchestrator.store.migrations.baseline.tables_0001 import Base

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    Base.metadata.create_all(op.get_bind())


def downgrade() -> None:
    Base.metadata.drop_all(op.get_bind())
