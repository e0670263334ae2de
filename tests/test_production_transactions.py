"""One transaction per submission: a failing plugin hook leaves nothing behind; retries; SQLite settings."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from test_production_support import CSRF, RECEIPT

from core import hookimpl
from core.db import DatabaseSettingsError, _configure_sqlite
from core.models import Alert, Assignment, AuditEntry, Client, Response, Score
from core.responses import create_assignment, is_retryable, submit_by_token

ANSWERS_WITH_ALERT = {f"phq9_{n}": "3" for n in range(1, 10)}  # item 9 > 0 raises an urgent alert


class FailingPlugin:
    @hookimpl
    def response_submitted(self, instrument_id: str, version: str, response_id: int, result: Any) -> None:
        raise RuntimeError("the plugin's export target is down")


def _link(app: Any) -> str:
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        return create_assignment(session, portal.engine, Client(code="T-1"), "phq9")[1]


def _counts(app: Any) -> dict[str, int]:
    with app.extensions["rapportal"].sessions() as session:
        counts = {
            model.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(model))
            for model in (Response, Score, Alert, AuditEntry)
        }
        counts["completed"] = session.scalar(
            sa.select(sa.func.count(Assignment.id)).where(Assignment.completed_at.is_not(None))
        )
        return counts


def _post(client: Any, token: str) -> Any:
    csrf = CSRF.search(client.get(f"/a/{token}").get_data(as_text=True)).group(1)
    return client.post(f"/a/{token}", data={**ANSWERS_WITH_ALERT, "csrf_token": csrf})


def test_a_failing_hook_rolls_back_response_scores_alerts_and_audit_and_the_client_is_told(app, client) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # let the real error page answer, as in production
    token = _link(app)
    pm = app.extensions["rapportal"].engine.plugin_manager
    pm.register(FailingPlugin(), name="failing")
    try:
        reply = _post(client, token)
    finally:
        pm.unregister(name="failing")
    assert reply.status_code == 500
    assert "Your answers were not saved" in reply.get_data(as_text=True)
    assert _counts(app) == {"responses": 0, "scores": 0, "alerts": 0, "audit_entries": 0, "completed": 0}

    reply = _post(client, token)  # the plugin recovered: the same link can be answered now
    assert reply.status_code == 200 and RECEIPT.search(reply.get_data(as_text=True))
    assert _counts(app) == {"responses": 1, "scores": 1, "alerts": 1, "audit_entries": 1, "completed": 1}


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_serialization_failures_and_deadlocks_are_retried(app, monkeypatch, sqlstate: str) -> None:
    import core.responses

    token = _link(app)
    real = core.responses.submit_response
    calls = []

    def fails_once(*args: Any, **kwargs: Any):
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError("INSERT", {}, _DriverError(sqlstate))
        return real(*args, **kwargs)

    monkeypatch.setattr(core.responses, "submit_response", fails_once)
    portal = app.extensions["rapportal"]
    answers = {key: int(value) for key, value in ANSWERS_WITH_ALERT.items()}
    submission = submit_by_token(portal.sessions, portal.engine, token, answers)
    assert submission.created and len(calls) == 2
    assert _counts(app)["responses"] == 1


def test_other_database_errors_are_not_retried() -> None:
    assert not is_retryable(sa.exc.OperationalError("SELECT", {}, _DriverError("42P01")))  # no such table
    assert not is_retryable(sa.exc.OperationalError("SELECT", {}, _DriverError("53100")))  # disk full
    assert not is_retryable(sa.exc.IntegrityError("INSERT", {}, _DriverError("08006")))
    assert is_retryable(sa.exc.OperationalError("SELECT", {}, _DriverError("40001")))


@pytest.mark.parametrize("sqlstate", ["57P01", "57P03", "08006", None])  # shutdown, starting up, lost, never reached
def test_a_restarting_or_unreachable_server_is_waited_for(sqlstate: str | None) -> None:
    assert is_retryable(sa.exc.OperationalError("SELECT", {}, _DriverError(sqlstate)))


class _FakeCursor:
    def __init__(self, pragmas: dict[str, Any]) -> None:
        self.pragmas, self.last = pragmas, None

    def execute(self, sql: str) -> _FakeCursor:
        self.last = sql.split()[-1].split("=")[0]
        return self

    def fetchone(self) -> tuple:
        return (None, "main", self.pragmas["file"]) if self.last == "database_list" else (self.pragmas[self.last],)

    def close(self) -> None:
        pass


class _FakeConnection:
    isolation_level = ""

    def __init__(self, **pragmas: Any) -> None:
        self.pragmas = pragmas

    def cursor(self) -> _FakeCursor:
        return _FakeCursor(self.pragmas)


@pytest.mark.parametrize(("journal", "synchronous"), [("delete", 2), ("wal", 1)])
def test_sqlite_refuses_to_run_without_wal_and_synchronous_full(journal: str, synchronous: int) -> None:
    with pytest.raises(DatabaseSettingsError, match="journal_mode=wal and synchronous=2"):
        _configure_sqlite(_FakeConnection(journal_mode=journal, synchronous=synchronous, file="/x.db"), None)


def test_sqlite_connections_run_with_wal_and_synchronous_full(tmp_path) -> None:
    from core.db import make_db_engine

    db = make_db_engine(f"sqlite:///{tmp_path / 'settings.db'}")
    with db.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    db.dispose()


class ConstraintPlugin:
    """A plugin whose own write breaks a database constraint (not the one-response-per-link one)."""

    calls = 0

    @hookimpl
    def response_submitted(self, instrument_id: str, version: str, response_id: int, result: Any) -> None:
        ConstraintPlugin.calls += 1
        raise sa.exc.IntegrityError("INSERT INTO plugin_table ...", {}, Exception("UNIQUE constraint failed"))


def test_an_unrelated_constraint_failure_is_not_mistaken_for_a_double_submit(app_config) -> None:
    from web import create_app

    app = create_app({**app_config, "EXTRA_PLUGINS": [ConstraintPlugin()]})
    portal = app.extensions["rapportal"]
    token = _link(app)
    answers = {f"phq9_{n}": 0 for n in range(1, 10)}
    with pytest.raises(RuntimeError, match="a database constraint refused it"):
        submit_by_token(portal.sessions, portal.engine, token, answers)
    assert ConstraintPlugin.calls == 1  # tried once, then recognised that no other submit had won
    assert _counts(app)["responses"] == 0
    portal.db.dispose()
