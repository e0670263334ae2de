"""Database connection: SQLite by default (WAL, busy timeout, durable commits), PostgreSQL to scale out."""

from __future__ import annotations

import collections
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.models import Base


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's BEGIN below open transactions, so writes can take the lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged answer survives power loss
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    journal = cursor.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = cursor.execute("PRAGMA synchronous").fetchone()[0]
    in_memory = cursor.execute("PRAGMA database_list").fetchone()[2] == ""
    cursor.close()
    # Refuse to run where an acknowledged answer could be lost or writers could block readers:
    # WAL cannot be enabled on some network file systems, for example.
    if synchronous != 2 or (journal != "wal" and not in_memory):
        raise DatabaseSettingsError(
            f"SQLite runs with journal_mode={journal}, synchronous={synchronous}; Rapportal needs "
            "journal_mode=wal and synchronous=2 (FULL). Put the database on a local file system."
        )


class DatabaseSettingsError(RuntimeError):
    """The database connection lacks a setting that durability or concurrency depends on."""


READ_ONLY = "rapportal_read_only"  # execution option of the engine behind read-only sessions


class ReadOnlySessionError(RuntimeError):
    """Something tried to write through a session opened for reading (:func:`make_read_session_factory`)."""


def _begin(conn: Any) -> None:
    # A writing transaction takes the write lock at the start (BEGIN IMMEDIATE), so concurrent
    # writers wait (busy timeout) instead of failing half-way with "database is locked". A
    # read-only one begins deferred and never takes it: in WAL mode it reads a snapshot while
    # another connection writes, so page views neither wait for submissions nor hold them up.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
        return
    raw = conn.connection.dbapi_connection
    if isinstance(raw, QueuedWriterConnection):
        raw.join_writer_queue()
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        if isinstance(raw, QueuedWriterConnection):
            raw.leave_writer_queue()
        raise


def _open_queue_file(path: str) -> int | None:
    # flock needs no write access, so a queue file made by another account (root running the CLI,
    # say) still serves when it can be read; one that cannot be opened at all leaves the queue out.
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None
    except OSError:
        return None


WRITER_QUEUE_SECONDS = 30.0  # as long as the busy timeout: after that, SQLite's own lock decides


class QueuedWriterConnection(sqlite3.Connection):
    """A SQLite connection whose writing transactions wait their turn on a lock file beside the database.

    SQLite lets a writer that finds the write lock taken sleep in growing steps (1, 2, 5, 10 ms ...)
    before it tries again, so under steady submissions the lock often sits free while the waiter
    sleeps, and the machine idles. Writers of every process and thread that open the database through
    :func:`make_db_engine` therefore queue on ``<database>-writers`` (an exclusive ``flock``) right
    before ``BEGIN IMMEDIATE`` and leave at ``COMMIT``, ``ROLLBACK`` or close, so the next one starts
    within a fraction of a millisecond. The queue only orders writers: SQLite's lock still guards the
    data, and a writer that waited :data:`WRITER_QUEUE_SECONDS` goes on to ``BEGIN IMMEDIATE`` anyway.
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        name = os.fsdecode(database)
        in_memory = name in ("", ":memory:") or name.startswith("file:") or "mode=memory" in name
        self._queue_path = None if in_memory else f"{name}-writers"
        self._queue_fd: int | None = None
        self._in_queue = False

    def join_writer_queue(self) -> None:
        if self._queue_path is None or self._in_queue:
            return
        if self._queue_fd is None:
            self._queue_fd = _open_queue_file(self._queue_path)
            if self._queue_fd is None:  # not ours to open: SQLite's busy handler orders this connection's writes
                self._queue_path = None
                return
        deadline = time.monotonic() + WRITER_QUEUE_SECONDS
        pause = 0.0001
        while True:
            try:
                fcntl.flock(self._queue_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.0008)
                continue
            self._in_queue = True
            return

    def leave_writer_queue(self) -> None:
        if self._in_queue:
            self._in_queue = False
            fcntl.flock(self._queue_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.leave_writer_queue()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.leave_writer_queue()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.leave_writer_queue()
            if self._queue_fd is not None:
                os.close(self._queue_fd)
                self._queue_fd = None


def make_db_engine(url: str, **kwargs: Any) -> sa.Engine:
    """Create the SQLAlchemy engine for ``url`` with Rapportal's connection settings."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "factory": QueuedWriterConnection}, **kwargs)
        sa.event.listen(engine, "connect", _configure_sqlite)
        sa.event.listen(engine, "begin", _begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    engine = sa.create_engine(url, **kwargs)
    sa.event.listen(engine, "checkin", _note_checkin)
    sa.event.listen(engine, "checkout", _ping_if_idle)
    return engine


PING_AFTER_IDLE_SECONDS = 10.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Test a pooled connection that sat idle before handing it out; a dead one is replaced.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per request that a busy
    server does not need, since its connections were in use a moment ago. A connection idle for
    :data:`PING_AFTER_IDLE_SECONDS` may have been cut (a server restart, a firewall's idle timeout),
    so it is pinged; :class:`~sqlalchemy.exc.DisconnectionError` makes the pool open a new one. A
    busy connection cut by a restart fails its next statement instead, which invalidates the whole
    pool; link pages and submissions retry that (``core.responses.retry_database``).
    """
    checked_in = record.info.get("checked_in")  # none yet: a connection opened just now
    if checked_in is None or time.monotonic() - checked_in < PING_AFTER_IDLE_SECONDS:
        return
    try:
        _ping(dbapi_connection)
    except Exception as exc:  # any failure of the ping means the connection is unusable
        raise sa.exc.DisconnectionError(str(exc)) from exc


def _ping(dbapi_connection: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    dbapi_connection.rollback()


def _failed(
    dialect: sa.Dialect,
    exc: Exception,
    dbapi_connection: Any,
    cursor: Any,
    invalidate: Callable[[BaseException], None],
    statement: str,
    arguments: Any,
) -> sa.exc.DBAPIError:
    """A driver's error as SQLAlchemy raises it; a lost connection is invalidated (dropped from the pool) first."""
    lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
    if lost:
        invalidate(exc)
    return sa.exc.DBAPIError.instance(
        statement, arguments, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
    )


@dataclass(frozen=True)
class _Prepared:
    sql: str
    names: tuple[str, ...] | None  # the parameters' order for a positional paramstyle (SQLite's ``?``)
    defaults: dict[str, Any]  # values the statement binds itself (``col == 5``)
    binds: dict[str, Callable[[Any], Any]]  # bind processors by parameter name
    converted: tuple[tuple[int, Callable[[Any], Any]], ...]  # the columns with a result processor, by position
    row: type[tuple[Any, ...]]  # a named tuple of the columns' keys (a repeated key gets a position instead)


class DirectStatement:
    """One statement, compiled once per dialect, run on its own straight on a pooled DBAPI connection.

    The hottest statements of the portal (a link page's lookup, an API key's lookup and its request count, a
    reading page's audit entry) are one statement each, and SQLAlchemy's ``Connection`` with its execution
    context cost more than the statement itself (about 60 µs of CPU on SQLite, 100 µs on PostgreSQL). This runs the statement's
    compiled SQL on the DBAPI cursor of a connection checked out of the engine's pool (so the pool's
    checkout ping and checkin still apply) and converts values with the column types' own result
    processors, so a row holds what ``Connection.execute`` would have returned, as a named tuple (by
    position, or by a column's key).

    The statement is its own transaction. A SELECT opens none: a single SELECT is consistent on its own;
    on SQLite no ``BEGIN`` is sent, it reads one snapshot under WAL and never takes the write lock. A
    writing statement (``writes=True``: an INSERT ... RETURNING, say) commits by itself: on SQLite it
    first takes its turn in the writer queue (:class:`QueuedWriterConnection`), then SQLite takes the
    write lock for the statement and commits it with ``synchronous=FULL`` like any other transaction.
    On PostgreSQL either kind runs in autocommit (no ``BEGIN``/``COMMIT`` round trips) and the connection
    goes back to the pool as it was.

    A database error is raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` (with
    ``connection_invalidated`` set, and the connection dropped from the pool, when it was lost), so
    callers retry it like any other (``core.responses.retry_database``). Listeners of the engine's
    ``before_cursor_execute`` event see the statement (with ``None`` for the connection and the context).

    Given a connection instead of the engine (:meth:`first`, :meth:`all`), the statement runs on that connection's
    DBAPI connection, inside its transaction, which the caller commits: a SQLite submission's writes.

    Use it only for a lone statement on a hot path; anything else goes through a session. Python-side
    column defaults are not applied: an INSERT names every value it stores.

    ``durable=False`` is for a write that may be forgotten in a power cut (an attempt counter, nothing clinical).
    On SQLite it commits with ``synchronous=NORMAL``: SQLite does not wait for the disk, so the write lock is held
    for about 15 µs instead of an fsync's 150-200 µs. The commit survives a crash of the process (the operating
    system has it), and the next ``FULL`` commit of any connection syncs the whole WAL, this one included; WAL
    stays consistent either way (https://sqlite.org/pragma.html#pragma_synchronous). The connection goes back to
    the pool with ``synchronous=FULL`` again, or is dropped. PostgreSQL commits it like any other statement.
    """

    def __init__(self, statement: sa.Select[Any] | sa.Insert, *, writes: bool = False, durable: bool = True) -> None:
        if not durable and not writes:
            raise ValueError("only a writing statement can be made not durable")
        self.statement = statement
        self.writes = writes
        self.durable = durable
        self._prepared: dict[str, _Prepared] = {}

    def first(self, db: sa.Engine | sa.Connection, parameters: dict[str, Any]) -> Any:
        """The first row for ``parameters`` (the statement's ``bindparam`` names), or None.

        Given the engine, the statement runs by itself on a pooled connection, as the class says. Given a connection,
        it runs on that connection's DBAPI connection, in its transaction (begun first if it has not begun, as
        ``Connection.execute`` would: ``BEGIN IMMEDIATE`` on SQLite), for a caller whose reads or writes must be part
        of it; the caller commits."""
        rows = self._run(db, parameters, every_row=False)
        return rows[0] if rows else None

    def all(self, db: sa.Engine | sa.Connection, parameters: dict[str, Any]) -> list[Any]:
        """Every row for ``parameters``, in the statement's order (by itself or in a connection's transaction, as
        :meth:`first`)."""
        return self._run(db, parameters, every_row=True)

    def _run(self, db: sa.Engine | sa.Connection, parameters: dict[str, Any], *, every_row: bool) -> list[Any]:
        if isinstance(db, sa.Connection):
            return self._run_in(db, parameters, every_row=every_row)
        engine = db
        dialect = engine.dialect
        prepared, arguments = self._arguments(dialect, parameters)
        postgresql = dialect.name == "postgresql"
        try:
            pooled = engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:  # unreachable: raised as Engine.connect would raise it
            lost = dialect.is_disconnect(exc, None, None)
            raise sa.exc.DBAPIError.instance(
                None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
            ) from exc
        raw = pooled.driver_connection
        queued = self.writes and isinstance(raw, QueuedWriterConnection)
        relaxed = not self.durable and not postgresql
        cursor = None
        lost = False
        try:
            if postgresql:
                raw.autocommit = True
            elif queued:
                raw.join_writer_queue()
            if relaxed:
                raw.execute("PRAGMA synchronous=NORMAL")
            cursor = raw.cursor()
            rows = self._execute(engine, None, cursor, prepared, arguments, every_row)
        except dialect.loaded_dbapi.Error as exc:
            error = _failed(dialect, exc, pooled.dbapi_connection, cursor, pooled.invalidate, prepared.sql, arguments)
            lost = error.connection_invalidated
            raise error from exc
        finally:
            if relaxed and not lost:
                try:  # every other write of this pooled connection must wait for the disk again
                    raw.execute("PRAGMA synchronous=FULL")
                except dialect.loaded_dbapi.Error as exc:
                    pooled.invalidate(exc)
            if queued:
                raw.leave_writer_queue()
            if postgresql and not lost:
                # whatever happened, the pooled connection goes back with transactions on: a session that got
                # it in autocommit would commit statement by statement
                try:
                    raw.autocommit = False
                except dialect.loaded_dbapi.Error as exc:
                    pooled.invalidate(exc)
            pooled.close()  # back to the pool (its reset rolls back nothing: no transaction was begun)
        return self._rows(prepared, rows)

    def _run_in(self, connection: sa.Connection, parameters: dict[str, Any], *, every_row: bool) -> list[Any]:
        """The statement on ``connection``'s DBAPI connection, in its transaction: without SQLAlchemy's execution
        context, which cost a SQLite submission's five writes about as much as the writes themselves."""
        if not self.durable:
            raise ValueError("a statement that is not durable runs by itself: give it the engine")
        if not connection.in_transaction():
            connection.begin()
        dialect = connection.dialect
        prepared, arguments = self._arguments(dialect, parameters)
        fairy = connection.connection
        cursor = None
        try:
            cursor = fairy.driver_connection.cursor()
            rows = self._execute(connection.engine, connection, cursor, prepared, arguments, every_row)
        except dialect.loaded_dbapi.Error as exc:
            raise _failed(
                dialect, exc, fairy.dbapi_connection, cursor, connection.invalidate, prepared.sql, arguments
            ) from exc
        return self._rows(prepared, rows)

    def _arguments(self, dialect: sa.Dialect, parameters: dict[str, Any]) -> tuple[_Prepared, Any]:
        prepared = self._prepared.get(dialect.name) or self._prepare(dialect)
        values = prepared.defaults | parameters
        for name, process in prepared.binds.items():
            values[name] = process(values[name])
        return prepared, values if prepared.names is None else tuple(values[name] for name in prepared.names)

    def _execute(
        self,
        engine: sa.Engine,
        connection: sa.Connection | None,
        cursor: Any,
        prepared: _Prepared,
        arguments: Any,
        every_row: bool,
    ) -> list[Any]:
        if engine.dispatch.before_cursor_execute:  # statement counters (tests, bench) see it too
            engine.dispatch.before_cursor_execute(connection, cursor, prepared.sql, arguments, None, False)
        cursor.execute(prepared.sql, arguments)
        # a writing statement is read to the end (SQLite commits it when it is done); a SELECT for its first row
        # reads no further
        rows = cursor.fetchall() if self.writes or every_row else cursor.fetchmany(1)
        cursor.close()
        return rows

    @staticmethod
    def _rows(prepared: _Prepared, rows: list[Any]) -> list[Any]:
        make, converted = prepared.row._make, prepared.converted
        if not converted:
            return [make(row) for row in rows]
        found = []
        for row in rows:
            values = list(row)
            for position, process in converted:
                values[position] = process(values[position])
            found.append(make(values))
        return found

    def _prepare(self, dialect: sa.Dialect) -> _Prepared:
        compiled = self.statement.compile(dialect=dialect)
        binds, defaults = {}, {}
        for name, bind in compiled.binds.items():
            if bind.expanding:
                raise ValueError("DirectStatement takes no expanding (IN list) parameters")
            if not bind.required:
                defaults[name] = bind.effective_value
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds[name] = process
        results = (
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in self.statement.exported_columns
        )
        converted = tuple((position, process) for position, process in enumerate(results) if process is not None)
        names = tuple(compiled.positiontup or ()) if dialect.positional else None
        keys = [column.key for column in self.statement.exported_columns]
        row = collections.namedtuple("DirectRow", keys, rename=True)  # type: ignore[misc]
        prepared = _Prepared(compiled.string, names, defaults, binds, converted, row)
        self._prepared[dialect.name] = prepared
        return prepared


def make_session_factory(engine: sa.Engine) -> so.sessionmaker[so.Session]:
    return so.sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: sa.Engine) -> so.sessionmaker[so.Session]:
    """Sessions for reading only: on SQLite their transactions do not take the write lock.

    A read that turned into a write could fail half-way under concurrency (SQLite cannot upgrade
    a deferred transaction whose snapshot another writer has overtaken), so these sessions refuse
    every write with :class:`ReadOnlySessionError`; write through a session of
    :func:`make_session_factory` instead.

    On PostgreSQL they read in autocommit: under READ COMMITTED every statement takes its own snapshot
    whether or not a transaction surrounds it, so a read-only transaction gave the reads nothing but its
    ``BEGIN`` and ``ROLLBACK`` round trips (two of a staff page's dozen).
    """
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    factory = so.sessionmaker(engine.execution_options(**options), expire_on_commit=False)
    sa.event.listen(factory, "before_flush", _refuse_flush)
    sa.event.listen(factory, "do_orm_execute", _refuse_write_statement)
    return factory


def _refuse_flush(session: so.Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("a read-only session cannot store changes")


def _refuse_write_statement(state: so.ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlySessionError("a read-only session cannot run INSERT, UPDATE or DELETE")


def create_schema(engine: sa.Engine) -> None:
    """Create every table (tests and first start; migrations take over in production)."""
    Base.metadata.create_all(engine)
