"""The run engine: steps known by name, attempts, needs, fan-out summary, memo key.

- ``run_steps``: unique (run_id, name); columns needs, shards, cache_key.
- ``run_attempts``: one row per container tried (shard: fan-out, null otherwise).
- ``pending_merges.steps``: [run id, position] pairs become [run id, step name].
- ``pipelines.run_timeout``.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from orchestrator.store.migrations.baseline.tables_0001 import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("run_timeout", sa.Float(), nullable=True))
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("needs", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("shards", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cache_key", sa.String(64), nullable=True))
    op.create_index("uq_run_steps_name", "run_steps", ["run_id", "name"], unique=True)
    op.create_table(
        "run_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=True),
        sa.Column("speculative", sa.Boolean(), nullable=False),
        sa.Column("tool", sa.String(128), nullable=False),
        sa.Column("container", sa.String(260), nullable=True),
        sa.Column("image_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_run_attempts_run_id", "run_attempts", ["run_id"])
    op.create_index("ix_run_attempts_step", "run_attempts", ["run_id", "step"])
    _queued_steps_by_name()


def _queued_steps_by_name() -> None:
    """Queued merges name their steps by position; look each name up in run_steps."""
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT dataset, branch, steps FROM pending_merges")).all()
    for dataset, branch, steps in rows:
        pairs: list[Any] = json.loads(steps) if isinstance(steps, str) else list(steps or [])
        named = []
        for run_id, position in pairs:
            if isinstance(position, str):
                named.append([run_id, position])
                continue
            name = bind.execute(
                sa.text("SELECT name FROM run_steps WHERE run_id = :r AND position = :p"),
                {"r": run_id, "p": position},
            ).scalar()
            if name is not None:
                named.append([run_id, name])
        bind.execute(
            sa.text("UPDATE pending_merges SET steps = :s WHERE dataset = :d AND branch = :b"),
            {"s": json.dumps(named), "d": dataset, "b": branch},
        )


def downgrade() -> None:
    op.drop_index("ix_run_attempts_step", "run_attempts")
    op.drop_index("ix_run_attempts_run_id", "run_attempts")
    op.drop_table("run_attempts")
    op.drop_index("uq_run_steps_name", "run_steps")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("cache_key")
        batch.drop_column("shards")
        batch.drop_column("needs")
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("run_timeout")
