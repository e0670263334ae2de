"""Attempt counters in the database, so every process and host shares them.

Two kinds share the ``throttle_counters`` table. Fixed-window counters (:func:`count_attempt`)
hold one row per key and window. Backoff counters (:class:`Backoff`) hold one row per key:
``count`` is the failures so far and ``window_start`` the moment of the last one, in
milliseconds since the epoch; each failure past the free ones doubles the wait before the next try.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from core.db import DirectStatement
from core.models import ThrottleCounter


def _count_statement(insert: type) -> sa.Insert:
    statement = insert(ThrottleCounter).values(key=sa.bindparam("key"), window_start=sa.bindparam("window"), count=1)
    return statement.on_conflict_do_update(
        index_elements=[ThrottleCounter.key, ThrottleCounter.window_start],
        set_={"count": ThrottleCounter.count + 1},
    ).returning(ThrottleCounter.count)


# one upsert that returns the new count, built once per dialect (both have ON CONFLICT ... RETURNING)
_COUNT_ATTEMPT = {"postgresql": _count_statement(postgresql.insert), "sqlite": _count_statement(sqlite.insert)}
# the same, run as a transaction of its own (compiled once); a count lost in a power cut only loosens a limit for a
# moment, so on SQLite it does not wait for the disk (DirectStatement's ``durable``)
_COUNT_ALONE = {
    name: DirectStatement(statement, writes=True, durable=False) for name, statement in _COUNT_ATTEMPT.items()
}


def count_attempt(
    where: so.Session | sa.Connection | sa.Engine, key: str, window_seconds: int, now: float | None = None
) -> int:
    """Record one attempt for ``key`` and return how many there have been in the current window.

    Given a session or a connection, the count is part of its transaction; given the engine, it is one
    statement that commits by itself before this returns (:class:`core.db.DirectStatement`), on SQLite without
    waiting for the disk: a power cut may forget the latest counts, a crash of the process does not.
    """
    window = int((now if now is not None else time.time()) // window_seconds)
    if isinstance(where, sa.Engine):
        return _COUNT_ALONE[where.dialect.name].first(where, {"key": key, "window": window})[0]
    connection = where.connection() if isinstance(where, so.Session) else where
    statement = _COUNT_ATTEMPT[connection.dialect.name]
    return connection.execute(statement, {"key": key, "window": window}).scalar_one()


def attempts(session: so.Session, key: str, window_seconds: int, now: float | None = None) -> int:
    """How many attempts ``key`` has made in the current window, without counting a new one."""
    window = int((now if now is not None else time.time()) // window_seconds)
    found = session.scalar(
        sa.select(ThrottleCounter.count).where(ThrottleCounter.key == key, ThrottleCounter.window_start == window)
    )
    return found or 0


# -- exponential backoff --------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """How a backoff counter slows its key: ``free`` failures cost nothing, then 2, 4, 8, ... seconds.

    ``max_wait`` caps the wait; a counter without a failure for ``forget`` seconds starts again at zero.
    """

    free: int
    max_wait: int
    forget: int

    def wait_after(self, failures: int) -> int:
        """Seconds to wait after the ``failures``-th failure before the next try."""
        if failures <= self.free:
            return 0
        return min(self.max_wait, 2 ** min(failures - self.free, 31))


def _millis(now: datetime) -> int:
    return round(now.timestamp() * 1000)


def _failures(session: so.Session, key: str) -> tuple[int, int | None]:
    row = session.execute(
        sa.select(ThrottleCounter.count, ThrottleCounter.window_start)
        .where(ThrottleCounter.key == key)
        .order_by(ThrottleCounter.window_start.desc())
        .limit(1)
    ).first()
    return (row.count, row.window_start) if row else (0, None)


def lock_keys(session: so.Session, keys: Iterable[str]) -> None:
    """Hold ``keys`` until the transaction ends, so that parallel tries cannot all pass one check.

    PostgreSQL takes transaction-scoped advisory locks in a fixed order (no deadlock); SQLite
    transactions already hold the write lock (BEGIN IMMEDIATE).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    ids = sorted({int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True) for key in keys})
    for lock_id in ids:
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def backoff_wait(session: so.Session, key: str, rule: Backoff, now: datetime) -> float:
    """Seconds ``key`` must still wait before its next try (0: it may try now)."""
    failures, last = _failures(session, key)
    if last is None:
        return 0.0
    elapsed = (_millis(now) - last) / 1000
    if elapsed >= rule.forget:
        return 0.0
    return max(0.0, rule.wait_after(failures) - elapsed)


def record_failure(session: so.Session, key: str, rule: Backoff, now: datetime) -> int:
    """Count one failure for ``key`` and return its failures so far (after ``rule.forget`` quiet: 1)."""
    failures, last = _failures(session, key)
    if last is None or _millis(now) - last >= rule.forget * 1000:
        failures = 0
    session.execute(sa.delete(ThrottleCounter).where(ThrottleCounter.key == key))
    session.execute(sa.insert(ThrottleCounter).values(key=key, window_start=_millis(now), count=failures + 1))
    return failures + 1


def clear_keys(session: so.Session, keys: Iterable[str] = (), prefix: str | None = None) -> int:
    """Delete the counters of ``keys`` and of every key starting with ``prefix``; return how many rows went."""
    condition = ThrottleCounter.key.in_(list(keys))
    if prefix:
        condition = sa.or_(condition, ThrottleCounter.key.startswith(prefix, autoescape=True))
    return session.execute(sa.delete(ThrottleCounter).where(condition)).rowcount


def forget_quiet(session: so.Session, prefix: str, quiet_seconds: int, now: datetime) -> None:
    """Delete backoff counters under ``prefix`` without a failure for ``quiet_seconds`` (they count as zero)."""
    session.execute(
        sa.delete(ThrottleCounter).where(
            ThrottleCounter.key.startswith(prefix, autoescape=True),
            ThrottleCounter.window_start < _millis(now) - quiet_seconds * 1000,
        )
    )
