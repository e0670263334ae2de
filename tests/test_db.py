"""Database sessions: writing transactions take SQLite's write lock up front, read-only ones never do."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from test_production_support import CSRF

import core.db
from core.db import (
    DirectStatement,
    ReadOnlySessionError,
    create_schema,
    make_db_engine,
    make_read_session_factory,
    make_session_factory,
)
from core.engine import build_engine
from core.models import Client, ThrottleCounter
from core.responses import _LINK_LOOKUP, create_assignment, is_retryable
from core.throttle import attempts, count_attempt
from core.tokens import hash_token
from web import create_app


def _write_elsewhere(path: Path) -> None:
    """A second writer that waits at most 0.2 s for the write lock."""
    other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO throttle_counters (key, window_start, count) VALUES ('w', 1, 1)")
        other.execute("COMMIT")
    finally:
        other.close()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> tuple[sa.Engine, Path]:
    path = tmp_path / "lock.db"
    db = make_db_engine(f"sqlite:///{path}")
    create_schema(db)
    yield db, path
    db.dispose()


def test_an_open_read_only_transaction_does_not_block_a_writer_on_sqlite(sqlite_db) -> None:
    db, path = sqlite_db
    with make_read_session_factory(db)() as session:
        session.scalar(sa.select(sa.func.count()).select_from(Client))  # the read transaction is open now
        _write_elsewhere(path)
        assert session.in_transaction()


def test_an_open_writing_transaction_holds_the_sqlite_write_lock(sqlite_db) -> None:
    db, path = sqlite_db
    with make_session_factory(db)() as session:
        session.scalar(sa.select(sa.func.count()).select_from(Client))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _write_elsewhere(path)


def test_a_read_only_session_refuses_to_store_changes(db_url: str) -> None:
    db = make_db_engine(db_url)
    create_schema(db)
    try:
        with make_read_session_factory(db)() as session:
            session.add(Client(code="R-1"))
            with pytest.raises(ReadOnlySessionError):
                session.flush()
        with make_read_session_factory(db)() as session, pytest.raises(ReadOnlySessionError):
            session.execute(sa.delete(ThrottleCounter))
        with make_session_factory(db)() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Client)) == 0
    finally:
        db.dispose()


def test_a_read_only_session_reads_in_autocommit_on_postgresql_and_leaves_the_pool_as_it_was(db_url: str) -> None:
    """No BEGIN and ROLLBACK around a read-only session's reads on PostgreSQL (READ COMMITTED takes a snapshot per
    statement anyway); on SQLite a deferred BEGIN, so its reads share one snapshot. Either way the connection goes
    back to the pool with transactions on for writing sessions."""
    db = make_db_engine(db_url)
    create_schema(db)
    try:
        with make_read_session_factory(db)() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Client)) == 0
            raw = session.connection().connection.dbapi_connection
            assert _in_transaction(raw) is (db.dialect.name == "sqlite")
        with make_session_factory(db)() as session:
            session.add(Client(code="W-1"))
            session.flush()
            assert _in_transaction(session.connection().connection.dbapi_connection)
            session.rollback()
        with make_session_factory(db)() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Client)) == 0  # the rollback held
    finally:
        db.dispose()


@pytest.fixture
def sqlite_app(app_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({**app_config, "DATABASE_URL": f"sqlite:///{tmp_path / 'web.db'}"})
    yield app
    app.extensions["rapportal"].db.dispose()


def _hold_write_lock(app: Any) -> sqlite3.Connection:
    holder = sqlite3.connect(app.extensions["rapportal"].db.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_link_page_is_served_while_another_connection_holds_the_sqlite_write_lock(sqlite_app) -> None:
    state = sqlite_app.extensions["rapportal"]
    with state.sessions.begin() as session:
        token = create_assignment(session, state.engine, Client(code="T-1"), "phq9")[1]
    holder = _hold_write_lock(sqlite_app)
    try:
        page = sqlite_app.test_client().get(f"/a/{token}")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert page.status_code == 200
    assert CSRF.search(page.get_data(as_text=True))


def test_an_unknown_link_is_still_counted_after_the_read_only_lookup(sqlite_app) -> None:
    client = sqlite_app.test_client()
    assert client.get("/a/no-such-token-at-all").status_code == 404
    assert client.get("/a/another-unknown-token").status_code == 404
    with sqlite_app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(ThrottleCounter.count).where(ThrottleCounter.key.startswith("link:"))) == 2


def _queue_taken(path: Path) -> bool:
    """Whether a writer holds the queue beside the database (tried from a descriptor of our own)."""
    fd = os.open(f"{path}-writers", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing lets go of a lock we took
    return False


def test_a_writing_transaction_holds_the_writer_queue_until_it_commits(sqlite_db) -> None:
    db, path = sqlite_db
    with make_session_factory(db)() as session:
        session.add(Client(code="Q-1"))
        session.flush()
        assert _queue_taken(path)
        session.commit()
        assert not _queue_taken(path)


def test_a_rolled_back_or_failed_writing_transaction_leaves_the_writer_queue(sqlite_db) -> None:
    db, path = sqlite_db
    with make_session_factory(db)() as session:
        session.add(Client(code="Q-2"))
        session.flush()
        session.rollback()
        assert not _queue_taken(path)
    with pytest.raises(sa.exc.IntegrityError), make_session_factory(db).begin() as session:
        session.add_all([Client(code="Q-3"), Client(code="Q-3")])  # the code is unique
    assert not _queue_taken(path)


def test_a_read_only_transaction_never_joins_the_writer_queue(sqlite_db) -> None:
    db, path = sqlite_db
    with make_read_session_factory(db)() as session:
        session.scalar(sa.select(sa.func.count()).select_from(Client))
        assert session.in_transaction()
        assert not _queue_taken(path)


def test_a_writer_that_waited_too_long_in_the_queue_lets_sqlite_decide(sqlite_db, monkeypatch) -> None:
    db, path = sqlite_db
    monkeypatch.setattr(core.db, "WRITER_QUEUE_SECONDS", 0.05)
    stuck = os.open(f"{path}-writers", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(stuck, fcntl.LOCK_EX)  # a holder that never leaves (and holds no SQLite lock)
    try:
        with make_session_factory(db).begin() as session:
            session.add(Client(code="Q-4"))
        with make_read_session_factory(db)() as session:
            assert session.scalar(sa.select(Client.code)) == "Q-4"
    finally:
        os.close(stuck)


def _backend_pid(db: sa.Engine) -> int:
    with db.connect() as connection:
        return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def _terminate(db: sa.Engine, pid: int) -> None:
    with db.connect() as connection:
        connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        connection.commit()


@pytest.fixture
def postgresql_pool(db_url: str) -> tuple[sa.Engine, sa.Engine]:
    if not db_url.startswith("postgresql"):
        pytest.skip("pooled server connections: the PostgreSQL pass (RAPPORTAL_TEST_DATABASE_URL)")
    db, admin = make_db_engine(db_url), make_db_engine(db_url, poolclass=sa.NullPool)
    yield db, admin
    db.dispose()
    admin.dispose()


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The pings sent before checkouts, counted."""
    sent: list[Any] = []
    ping = core.db._ping

    def counted(dbapi_connection: Any) -> None:
        sent.append(dbapi_connection)
        ping(dbapi_connection)

    monkeypatch.setattr(core.db, "_ping", counted)
    return sent


def test_an_idle_pooled_connection_that_the_server_cut_is_replaced_before_use(postgresql_pool, pings, monkeypatch):
    db, admin = postgresql_pool
    first = _backend_pid(db)
    _terminate(admin, first)
    monkeypatch.setattr(core.db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    assert _backend_pid(db) != first  # pinged, found dead, replaced: the request never saw it
    assert len(pings) == 1


def test_a_busy_pooled_connection_is_not_pinged_and_a_cut_one_fails_once(postgresql_pool, pings):
    db, admin = postgresql_pool
    first = _backend_pid(db)
    again = _backend_pid(db)
    assert again == first  # the same pooled connection, used a moment ago
    assert pings == []  # neither the new connection nor the one just checked in was pinged
    _terminate(admin, first)
    with pytest.raises(sa.exc.DBAPIError) as failed:
        _backend_pid(db)
    assert failed.value.connection_invalidated  # the pool drops it; the caller's retry gets a new one
    assert _backend_pid(db) != first


def _open_link(db: sa.Engine) -> str:
    with make_session_factory(db).begin() as session:
        client = Client(code="DR-1")
        session.add(client)
        session.flush()
        _assignment, token = create_assignment(session, build_engine(load_entrypoints=False), client, "phq9")
    return token


def test_a_direct_read_returns_what_connection_execute_returns_without_a_transaction(db_url):
    db = make_db_engine(db_url)
    try:
        create_schema(db)
        token = _open_link(db)
        params = {"token_hash": hash_token(token), "guess_key": "link:x", "window": 1}
        with db.connect() as connection:
            expected = connection.execute(_LINK_LOOKUP.statement, params).first()
        seen, statements = [], []
        sa.event.listen(db, "checkin", lambda dbapi_connection, _record: seen.append(_in_transaction(dbapi_connection)))
        sa.event.listen(db, "before_cursor_execute", lambda _c, _cursor, statement, *_a: statements.append(statement))
        found = _LINK_LOOKUP.first(db, params)
        assert seen == [False]  # no transaction was begun, so none was left open for the pool's reset
        assert len(statements) == 1 and statements[0].startswith("SELECT")  # statement counters see it
        assert tuple(found) == tuple(expected)  # datetimes, JSON and booleans converted as SQLAlchemy converts them
        assert isinstance(found.expires_at, datetime)
        assert _LINK_LOOKUP.first(db, {**params, "token_hash": "unknown"}) is None
        with db.connect() as connection:  # the pooled connection is back to transactions for everyone else
            connection.execute(sa.select(sa.func.count()).select_from(Client))
            assert connection.in_transaction()
            if db.dialect.name == "postgresql":
                assert connection.connection.dbapi_connection.autocommit is False
    finally:
        db.dispose()


def _in_transaction(dbapi_connection: Any) -> bool:
    if isinstance(dbapi_connection, sqlite3.Connection):
        return dbapi_connection.in_transaction
    return dbapi_connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


class _Upper(sa.types.TypeDecorator):
    """A parameter type that changes what it binds, to see that bind processors run."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return value.upper()


def test_a_direct_read_binds_the_statements_own_values_and_converts_parameters(db_url):
    db = make_db_engine(db_url)
    try:
        create_schema(db)
        with make_session_factory(db).begin() as session:
            session.add_all([Client(code="DR-2"), Client(code="DR-3")])
        since = datetime(2000, 1, 1, tzinfo=UTC)
        read = DirectStatement(
            sa.select(Client.code).where(Client.code != "DR-2", Client.created_at > sa.bindparam("since"))
        )
        assert read.first(db, {"since": since}) == ("DR-3",)  # the statement's own "DR-2" is bound too
        assert read.first(db, {"since": since}).code == "DR-3"  # by key, as a Row
        assert DirectStatement(sa.select(Client.code).order_by(Client.code.desc())).first(db, {}) == ("DR-3",)
        by_code = DirectStatement(sa.select(Client.id).where(Client.code == sa.bindparam("code", type_=_Upper())))
        assert by_code.first(db, {"code": "dr-3"}) is not None  # the parameter went through its type's processor
        every = DirectStatement(sa.select(Client.code, Client.created_at).order_by(Client.code))
        rows = every.all(db, {})
        with db.connect() as connection:
            assert rows == list(connection.execute(every.statement))  # every row, values converted alike
        assert [row.code for row in rows] == ["DR-2", "DR-3"]
        assert DirectStatement(sa.select(Client.code).where(Client.code == "none")).all(db, {}) == []
        with db.begin() as connection:  # given a connection, it reads in that connection's transaction
            connection.execute(sa.insert(Client).values(code="DR-4"))
            assert [row.code for row in every.all(connection, {})] == ["DR-2", "DR-3", "DR-4"]
            assert every.first(connection, {}).code == "DR-2"
            assert [row.code for row in every.all(db, {})] == ["DR-2", "DR-3"]  # by itself: only what is committed
    finally:
        db.dispose()


def _counter_insert() -> DirectStatement:
    statement = sa.insert(ThrottleCounter).values(key=sa.bindparam("key"), window_start=5, count=7)
    return DirectStatement(statement.returning(ThrottleCounter.count), writes=True)


def test_a_direct_write_commits_by_itself(db_url):
    db = make_db_engine(db_url)
    try:
        create_schema(db)
        assert count_attempt(db, "api:1", 60, now=0) == 1
        assert count_attempt(db, "api:1", 60, now=1) == 2
        with make_read_session_factory(db)() as session:  # another connection sees both: committed
            assert attempts(session, "api:1", 60, now=1) == 2
        insert = _counter_insert()
        assert insert.first(db, {"key": "DW-1"}).count == 7
        with pytest.raises(sa.exc.IntegrityError):
            insert.first(db, {"key": "DW-1"})  # key and window are unique: refused whole, nothing half-written
        with make_session_factory(db)() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(ThrottleCounter)) == 2
            if db.dialect.name == "postgresql":  # the failed statement's connection went back with transactions on
                assert session.connection().connection.dbapi_connection.autocommit is False
    finally:
        db.dispose()


def test_a_direct_write_takes_its_turn_in_the_writer_queue_and_leaves_it(sqlite_db) -> None:
    db, path = sqlite_db
    seen = []
    sa.event.listen(db, "before_cursor_execute", lambda *_a: seen.append(_queue_taken(path)))
    count_attempt(db, "api:2", 60)
    assert seen == [True]  # in the queue while the statement ran
    assert not _queue_taken(path)
    insert = _counter_insert()
    insert.first(db, {"key": "DW-2"})
    with pytest.raises(sa.exc.IntegrityError):
        insert.first(db, {"key": "DW-2"})
    assert not _queue_taken(path)  # a failed statement leaves the queue too
    with make_session_factory(db)() as session:
        assert session.scalar(sa.select(ThrottleCounter.count).where(ThrottleCounter.key == "api:2")) == 1


def test_a_count_on_sqlite_commits_without_waiting_for_the_disk_and_its_connection_goes_back_durable(sqlite_db):
    db, _path = sqlite_db
    raw = db.raw_connection()
    connection = raw.driver_connection
    raw.close()  # the pool's only idle connection: the next statements run on it
    sent: list[str] = []
    connection.set_trace_callback(sent.append)
    try:
        assert count_attempt(db, "api:3", 60) == 1
        insert = DirectStatement(_counter_insert().statement, writes=True, durable=False)
        insert.first(db, {"key": "DW-3"})
        with pytest.raises(sa.exc.IntegrityError):
            insert.first(db, {"key": "DW-3"})  # a failed one too goes back durable
    finally:
        connection.set_trace_callback(None)
    pragmas = [statement for statement in sent if statement.startswith("PRAGMA")]
    assert pragmas == ["PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"] * 3
    assert sent.index("PRAGMA synchronous=NORMAL") < next(i for i, s in enumerate(sent) if s.startswith("INSERT"))
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2
    sent.clear()
    connection.set_trace_callback(sent.append)
    try:
        _counter_insert().first(db, {"key": "DW-4"})  # a durable write changes nothing
    finally:
        connection.set_trace_callback(None)
    assert [statement for statement in sent if statement.startswith("PRAGMA")] == []
    with pytest.raises(ValueError, match="writing statement"):
        DirectStatement(sa.select(ThrottleCounter.count), durable=False)
    with db.connect() as in_a_transaction, pytest.raises(ValueError, match="runs by itself"):
        insert.first(in_a_transaction, {"key": "DW-5"})  # it would commit with the transaction, durably after all


def test_a_direct_read_on_a_cut_connection_fails_once_and_the_pool_replaces_it(postgresql_pool):
    db, admin = postgresql_pool
    create_schema(db)
    read = DirectStatement(sa.select(sa.func.pg_backend_pid().label("pid")))
    first = read.first(db, {}).pid
    assert read.first(db, {}).pid == first  # the same pooled connection
    _terminate(admin, first)
    with pytest.raises(sa.exc.DBAPIError) as failed:
        read.first(db, {})
    assert failed.value.connection_invalidated  # retry_database retries this
    assert is_retryable(failed.value)
    assert read.first(db, {}).pid != first


def test_a_queue_file_that_cannot_be_opened_leaves_writes_to_sqlite(sqlite_db, monkeypatch) -> None:
    db, _path = sqlite_db
    db.dispose()  # connections opened from here on meet the unreadable file
    monkeypatch.setattr(core.db, "_open_queue_file", lambda _path: None)
    with make_session_factory(db).begin() as session:
        session.add(Client(code="Q-5"))
    with make_read_session_factory(db)() as session:
        assert session.scalar(sa.select(Client.code).where(Client.code == "Q-5")) == "Q-5"
