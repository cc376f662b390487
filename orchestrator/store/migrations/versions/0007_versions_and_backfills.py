"""Pipeline versions and backfills as objects (issue 21).

- ``pipeline_versions``: one row per version of a pipeline's definition. Every pipeline that exists
  gets its version 1 here: its definition as stored, hashed as ``domain.versions`` hashes (the same
  function an init uses, so that initialising the same definition again records no version 2),
  ``created_at`` its last init, ``created_by`` "migration" (who initialised it is not known).
- ``runs.version``: the version a run ran with. Runs recorded before stay null: which definition
  they ran is not known (the pipeline may have been initialised again since).
- ``backfills`` and ``runs.backfill_id``. Backfills started before have no row (their runs stay,
  trigger ``backfill``, as they were).

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from orchestrator.store.migrations.baseline.tables_0001 import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_versions",
        sa.Column("pipeline", sa.String(128), primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
    )
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("pipeline", sa.String(128), nullable=False),
        sa.Column("cron", sa.String(128), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("start", UTCDateTime(), nullable=False),
        sa.Column("end", UTCDateTime(), nullable=False),
        sa.Column("ticks", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.Column("cancelled_at", UTCDateTime(), nullable=True),
        sa.Column("cancelled_running", sa.Boolean(), nullable=True),
    )
    op.create_index("ix_backfills_pipeline", "backfills", ["pipeline"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("backfill_id", sa.String(32), nullable=True))
    op.create_index("ix_runs_backfill_id", "runs", ["backfill_id"])
    _first_versions()


def _first_versions() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT name, description, steps, run_timeout, updated_at FROM pipelines")
    ).all()
    versions = sa.table(
        "pipeline_versions",
        sa.column("pipeline", sa.String()),
        sa.column("number", sa.Integer()),
        sa.column("hash", sa.String()),
        sa.column("definition", sa.JSON()),
        sa.column("created_at", UTCDateTime()),
        sa.column("created_by", sa.String()),
    )
    for name, description, steps, run_timeout, updated_at in rows:
        stored = {
            "name": name,
            "description": description or "",
            "steps": json.loads(steps) if isinstance(steps, str) else steps,
            "run_timeout": run_timeout,
        }
        definition, digest = _versioned(stored)
        bind.execute(
            versions.insert().values(
                pipeline=name,
                number=1,
                hash=digest,
                definition=definition,
                created_at=_aware(updated_at),
                created_by="migration",
            )
        )


def _versioned(stored: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The definition and hash an init of ``stored`` would record today. A definition today's
    models refuse (it cannot be run either) keeps its stored form, hashed as plain JSON."""
    from orchestrator.domain.versions import definition, definition_hash, parse_definition

    try:
        pipeline = parse_definition(stored)
    except ValueError:
        text = json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return stored, hashlib.sha256(text.encode()).hexdigest()
    return definition(pipeline), definition_hash(pipeline)


def _aware(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def downgrade() -> None:
    op.drop_index("ix_runs_backfill_id", "runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("backfill_id")
        batch.drop_column("version")
    op.drop_index("ix_backfills_pipeline", "backfills")
    op.drop_table("backfills")
    op.drop_table("pipeline_versions")
