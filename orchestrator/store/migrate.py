"""Bringing the database's schema to this version's, with Alembic, at ``Store.start``.

The revisions live in ``migrations/versions`` and ship inside the package. A database made before
migrations existed (tables, no ``alembic_version``) is stamped at the baseline ``0001`` (which is
exactly that schema) and upgraded from there, so its run history stays. An empty database is built
by running every revision.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

log = logging.getLogger(__name__)

BASELINE = "0001"
# A table every database made before migrations has.
_PRE_MIGRATION_TABLE = "runs"


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this version knows."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    current = ScriptDirectory.from_config(config).get_current_head()
    assert current is not None
    return current


def upgrade(connection: Connection) -> None:
    """Run (in the caller's transaction) whatever revisions the database lacks."""
    current = MigrationContext.configure(connection).get_current_revision()
    config = _config(connection)
    if current is None and inspect(connection).has_table(_PRE_MIGRATION_TABLE):
        log.info("database: made before migrations; stamping it at revision %s", BASELINE)
        command.stamp(config, BASELINE)
        current = BASELINE
    target = head()
    if current != target:
        log.info("database: upgrading schema from %s to %s", current or "nothing", target)
        command.upgrade(config, "head")
