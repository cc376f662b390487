"""Alembic's entry point, used only programmatically (``store.migrate``): the connection comes in
``config.attributes["connection"]``; there is no alembic.ini and no URL here."""

from __future__ import annotations

from alembic import context

from orchestrator.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place: batch operations copy the table instead.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
