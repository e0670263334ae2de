"""Per-app state: the engine and the database of the current Flask app, and the request's session.

One :class:`Portal` lives in ``app.extensions["rapportal"]``, built by :func:`web.app.create_app`.
Blueprints, forms and commands reach it only through :func:`portal` and :func:`db_session`, so
nothing imports the package root and tests never patch globals (flaskr's ``db.py`` is the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask, current_app, g

from core import Engine
from core.job_runner import JobBroker
from core.jobs import JobContext, JobQueue
from core.wording import refresh_wording

EXTENSION_KEY = "rapportal"


@dataclass
class Portal:
    """What one app holds: the engine, the database and caches built from the definitions."""

    engine: Engine
    db: sa.Engine
    sessions: so.sessionmaker[so.Session]
    read_sessions: so.sessionmaker[so.Session]
    jobs: JobQueue
    form_classes: dict[tuple[str, str, str | None], type] = field(default_factory=dict)
    widget_templates: dict[str, Any] = field(default_factory=dict)
    job_broker: JobBroker | None = None  # huey, carrying "job X is due" to the workers (core/job_runner.py)
    # (instrument id, version, wording source, wording language, page locale) -> texts and untouched item markup
    page_parts: dict[tuple[str, str, str | None, str, str], Any] = field(default_factory=dict)


def init_app(app: Flask, state: Portal) -> None:
    app.extensions[EXTENSION_KEY] = state
    app.teardown_appcontext(_close_db_session)


def portal(app: Flask | None = None) -> Portal:
    """The engine and database of ``app`` (default: the current app)."""
    return (app or current_app).extensions[EXTENSION_KEY]


def job_context(app: Flask | None = None) -> JobContext:
    """What a job run for ``app`` gets: its engine, sessions, settings and queue (workers and tests)."""
    app = app or current_app
    state = portal(app)
    return JobContext(engine=state.engine, sessions=state.sessions, settings=app.config, queue=state.jobs)


def db_session(*, read_only: bool = False, wording: bool = True) -> so.Session:
    """The request's database session, opened on first use and closed when the request ends.

    ``read_only`` on the first use opens it for reading only (``core.db.make_read_session_factory``):
    on SQLite its transactions do not take the write lock, and it refuses to write. A request that
    must write after all calls :func:`drop_db_session` first and then asks for a writing session.
    Opening it also brings the licensed wording up to date (one small query in the request's own
    transaction), so each request sees wording that any process or host installed before it;
    ``wording=False`` leaves that to the caller, who reads the stamp with its own first statement.
    """
    if "db_session" not in g:
        state = portal()
        g.db_session = (state.read_sessions if read_only else state.sessions)()
        if wording:
            refresh_wording(g.db_session, state.engine)
    return g.db_session


def drop_db_session() -> None:
    """Close the request's session (after a connection failed, say); the next :func:`db_session` opens a new
    one."""
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def _close_db_session(_exc: BaseException | None) -> None:
    drop_db_session()
