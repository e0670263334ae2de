"""Alembic environment: runs Rapportal's revisions against the connection or URL it is given.

The ``rapportal db`` commands and :func:`core.migrations.upgrade` pass a live connection in
``config.attributes["connection"]``; the plain ``alembic`` command line passes a URL.
"""

from __future__ import annotations

from alembic import context

from core.db import make_db_engine
from core.migrations import configure_context
from core.models import Base

config = context.config


def run_migrations_offline() -> None:
    """Emit SQL to standard output (``alembic upgrade --sql``) instead of running it."""
    url = config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        configure_context(context, connection)
        return
    db = make_db_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with db.connect() as connection:
            configure_context(context, connection)
    finally:
        db.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
