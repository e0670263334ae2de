"""Fixed-window attempt counters in the database, so every process and host shares them."""

from __future__ import annotations

import time

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from core.models import ThrottleCounter


def count_attempt(session: so.Session, key: str, window_seconds: int, now: float | None = None) -> int:
    """Record one attempt for ``key`` and return how many there have been in the current window."""
    window = int((now if now is not None else time.time()) // window_seconds)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(ThrottleCounter).values(key=key, window_start=window, count=1)
    statement = statement.on_conflict_do_update(
        index_elements=[ThrottleCounter.key, ThrottleCounter.window_start],
        set_={"count": ThrottleCounter.count + 1},
    )
    session.execute(statement)
    return session.scalar(
        sa.select(ThrottleCounter.count).where(ThrottleCounter.key == key, ThrottleCounter.window_start == window)
    )


def attempts(session: so.Session, key: str, window_seconds: int, now: float | None = None) -> int:
    """How many attempts ``key`` has made in the current window, without counting a new one."""
    window = int((now if now is not None else time.time()) // window_seconds)
    found = session.scalar(
        sa.select(ThrottleCounter.count).where(ThrottleCounter.key == key, ThrottleCounter.window_start == window)
    )
    return found or 0
