"""Schema migrations (Alembic) shipped inside the package, and the helpers the CLI and server use.

Revisions live in ``core/migrations/versions``; see ``core/migrations/README.md`` for how to add
one. SQLite runs them in batch mode (copy-and-move tables), PostgreSQL in one transaction under
an advisory lock so that several hosts starting at once upgrade the database exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.models import Base

MIGRATIONS_DIR = Path(__file__).parent
# The schema that ``create_all`` produced before migrations existed; such a database is stamped
# with this revision, then upgraded.
BASELINE_REVISION = "0001"
BASELINE_TABLES = frozenset(
    {
        "users", "clients", "episodes", "care_sessions", "assignments", "responses", "scores", "alerts",
        "audit_entries", "throttle_counters",
    }
)  # fmt: skip
# Any constant: PostgreSQL sessions that upgrade take this advisory lock one at a time.
_UPGRADE_LOCK_ID = 0x52415050


class MigrationError(Exception):
    """The database cannot be brought to the schema this version of Rapportal expects."""


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic configuration pointing at the packaged revisions (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of Rapportal."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise MigrationError(f"the migrations have {len(heads)} heads ({', '.join(heads)}); merge them into one")
    return heads[0]


def current_revision(db: sa.Engine) -> str | None:
    """The revision the database is at, or None for a database that migrations never touched."""
    with db.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: sa.Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (creating every table in an empty one); return the new revision."""
    with db.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
        stamped = MigrationContext.configure(connection).get_current_revision()
        connection.rollback()
        if stamped is None and tables == BASELINE_TABLES:
            # Created by create_all before migrations existed: identical to the baseline revision.
            command.stamp(alembic_config(connection), BASELINE_REVISION)
            connection.commit()
        elif stamped is None and tables:
            raise MigrationError(
                f"the database has tables ({', '.join(sorted(tables))}) but no migration history; "
                "point RAPPORTAL_DATABASE_URL at an empty database or at one Rapportal created"
            )
        command.upgrade(alembic_config(connection), revision)
        connection.commit()
    return current_revision(db)


def schema_differences(db: sa.Engine) -> list[Any]:
    """What ``alembic revision --autogenerate`` would put into a new revision (empty when models and
    migrations agree)."""
    with db.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, Base.metadata)


def configure_context(context: Any, connection: sa.Connection) -> None:
    """Run the migrations on ``connection`` (called from env.py)."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode copies and drops tables; foreign keys must be off for that, and SQLite only
        # switches them outside a transaction. They are checked before commit and switched back on.
        if connection.in_transaction():
            connection.commit()
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _UPGRADE_LOCK_ID})
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise MigrationError(f"the migration left rows with broken foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            if connection.in_transaction():
                connection.commit()
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
