"""A link's submission writes without reading first: whatever changed since its page read the link decides as before.

`core.responses.submit_link` trusts the link as the page read it a moment earlier and lets the guarded UPDATE
of `store_response` find out whether it is still open. These tests change the link between that read and the
submission, the window a double click, a clinician or the clock can fall into.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

import core.responses
from core import AlertRule, ResponseValidationError, hookimpl
from core.care import expire_link, reissue_link
from core.db import DirectStatement
from core.models import Alert, Assignment, AuditEntry, Client, Response, Score
from core.responses import (
    LinkError,
    LinkView,
    create_assignment,
    find_assignment,
    is_expired,
    look_up_link,
    store_response,
    submit_answers,
    submit_by_token,
    submit_link,
    submit_response,
)
from web import create_app

PHQ9_ONES = {f"phq9_{n}": 1 for n in range(1, 10)}


def _portal(app: Any) -> Any:
    return app.extensions["rapportal"]


def _link(app: Any, instrument_id: str = "phq9") -> str:
    portal = _portal(app)
    with portal.sessions.begin() as session:
        client = Client(code="LINK-1")
        session.add(client)
        _assignment, token = create_assignment(session, portal.engine, client, instrument_id)
    return token


def _read(app: Any, token: str) -> LinkView:
    link = look_up_link(_portal(app).db, token, guess_key="test", window_seconds=600).link
    assert link is not None and link.receipt is None
    return link


def _submit(app: Any, link: LinkView, token: str, answers: dict[str, Any] = PHQ9_ONES) -> Any:
    portal = _portal(app)
    return submit_link(portal.db, portal.sessions, portal.engine, link, token, answers, address="192.0.2.1")


def _count(app: Any, model: Any) -> int:
    with _portal(app).sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_an_open_link_is_stored_with_its_score_audit_entry_and_completion(app):
    token = _link(app)
    submission = _submit(app, _read(app, token), token)
    assert submission.created
    with _portal(app).sessions() as session:
        assignment = find_assignment(session, token)
        assert assignment.completed_at is not None
        assert assignment.response.id == submission.response_id
        assert assignment.response.receipt == submission.receipt
        assert session.scalar(sa.select(Score.values).where(Score.response_id == submission.response_id)) == {
            "total": "9"
        }
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "response.submit"))
        assert entry.target == f"response:{submission.response_id}" and entry.address == "192.0.2.1"


def test_a_link_answered_after_its_page_read_it_returns_the_first_receipt_and_stores_nothing(app):
    token = _link(app)
    link = _read(app, token)
    portal = _portal(app)
    first = submit_by_token(portal.sessions, portal.engine, token, PHQ9_ONES)
    entries = _count(app, AuditEntry)
    again = _submit(app, link, token, {**PHQ9_ONES, "phq9_1": 3})
    assert (again.response_id, again.receipt, again.created) == (first.response_id, first.receipt, False)
    assert _count(app, Response) == 1 and _count(app, Score) == 1
    assert _count(app, AuditEntry) == entries  # the second try left no trace


def _reissue(session: Any, token: str) -> None:
    reissue_link(session, find_assignment(session, token), actor="user:test", address=None)


def _expire(session: Any, token: str) -> None:
    expire_link(session, find_assignment(session, token), actor="user:test", address=None)


def _remove(session: Any, token: str) -> None:
    session.delete(find_assignment(session, token))


@pytest.mark.parametrize(
    ("change", "reason"),
    [(_reissue, "unknown"), (_expire, "expired"), (_remove, "unknown")],
    ids=["reissued", "expired", "removed"],
)
def test_a_link_changed_after_its_page_read_it_is_refused_and_nothing_is_stored(app, change, reason):
    token = _link(app)
    link = _read(app, token)
    with _portal(app).sessions.begin() as session:
        change(session, token)
    with pytest.raises(LinkError) as refused:
        _submit(app, link, token)
    assert refused.value.reason == reason
    assert _count(app, Response) == 0 and _count(app, Score) == 0
    with _portal(app).sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).where(Assignment.completed_at.is_not(None))) == 0


def test_answers_are_checked_before_the_database_is_touched(app):
    """Validation runs before the first statement, so on SQLite a refused answer never waits for the write lock."""
    token = _link(app)
    link = _read(app, token)
    statements = []
    sa.event.listen(_portal(app).db, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with pytest.raises(ResponseValidationError):
        _submit(app, link, token, {**PHQ9_ONES, "phq9_3": 7})
    assert statements == []
    assert _count(app, Response) == 0


def _stale_first(app: Any, token: str, change: Any) -> Any:
    """A ``locate`` for ``submit_answers`` whose first pass returns the link as it was before ``change`` committed
    (what READ COMMITTED lets happen between a kiosk's check and its write); later passes read it afresh."""
    with _portal(app).sessions() as session:
        stale = find_assignment(session, token)
    passes = []

    def locate(session: Any) -> Any:
        passes.append(1)
        if len(passes) == 1:
            with _portal(app).sessions.begin() as other:
                change(other, token)
            return session.merge(stale, load=False)
        assignment = find_assignment(session, token)
        if assignment.response is None and is_expired(assignment):
            raise LinkError("expired")
        return assignment

    return locate, passes


def test_on_the_orm_path_a_link_answered_between_the_check_and_the_write_returns_the_first_receipt(app):
    portal = _portal(app)
    token = _link(app)
    first = []

    def answer_meanwhile(session: Any, token: str) -> None:
        first.append(submit_response(session, portal.engine, find_assignment(session, token), PHQ9_ONES))

    locate, passes = _stale_first(app, token, answer_meanwhile)
    again = submit_answers(portal.sessions, portal.engine, locate, {**PHQ9_ONES, "phq9_1": 3})
    assert (again.receipt, again.created) == (first[0].receipt, False)
    assert len(passes) == 2
    assert _count(app, Response) == 1 and _count(app, Score) == 1


def test_on_the_orm_path_a_link_expired_between_the_check_and_the_write_is_refused(app):
    portal = _portal(app)
    token = _link(app)
    locate, passes = _stale_first(app, token, _expire)
    with pytest.raises(LinkError) as refused:
        submit_answers(portal.sessions, portal.engine, locate, PHQ9_ONES)
    assert refused.value.reason == "expired" and len(passes) == 2
    assert _count(app, Response) == 0 and _count(app, Score) == 0


class EarlierScoresRule:
    """A plugin rule that reads the client's earlier scores: it says how many it saw and the last total."""

    @hookimpl
    def register_alert_rules(self) -> list[AlertRule]:
        def evaluate(context: Any) -> str | None:
            earlier = context.earlier_scores
            return f"{len(earlier)} earlier, last {earlier[-1]['total']}" if earlier else None

        return [AlertRule("earlier_seen", "Earlier seen", "info", evaluate, instruments=("phq9",))]


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "EXTRA_PLUGINS": [EarlierScoresRule()]}


def test_alerts_of_a_link_submission_see_the_clients_earlier_scores(app):
    portal = _portal(app)
    with portal.sessions.begin() as session:
        client = Client(code="LINK-2")
        session.add(client)
        tokens = [create_assignment(session, portal.engine, client, "phq9")[1] for _ in range(3)]
    for token, value in zip(tokens, (0, 2, 3), strict=True):
        _submit(app, _read(app, token), token, {f"phq9_{n}": value for n in range(1, 10)})
    with portal.sessions() as session:
        messages = list(
            session.scalars(sa.select(Alert.message).where(Alert.rule == "earlier_seen").order_by(Alert.id))
        )
    assert messages == ["1 earlier, last 0", "2 earlier, last 18"]


@pytest.mark.parametrize("item_9", [0, 2], ids=["no alert", "an alert"])
def test_a_submission_writes_with_one_statement_on_postgresql_and_four_or_five_on_sqlite(app, item_9):
    """PostgreSQL chains the link's completion, the response, its score, its alerts and the audit entry in one
    statement, which commits by itself (no BEGIN and COMMIT round trips) when no plugin listens to the submission:
    it runs straight on a pooled connection (core.db.DirectStatement, which the listeners see without a
    Connection)."""
    token = _link(app)
    link = _read(app, token)
    writes = []

    def seen(connection: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _many: bool) -> None:
        if statement.split()[0] in ("WITH", "UPDATE", "INSERT"):
            where = "direct" if connection is None else "in a Connection"
            writes.append((statement.split()[0], where if context is None else f"{where}, executed by SQLAlchemy"))

    sa.event.listen(_portal(app).db, "before_cursor_execute", seen)
    _submit(app, link, token, {**{f"phq9_{n}": 0 for n in range(1, 9)}, "phq9_9": item_9})
    if _portal(app).db.dialect.name == "postgresql":
        assert writes == [("WITH", "direct")]
    else:
        # each straight on the Connection's DBAPI connection, in its transaction, without an execution context
        assert writes == [("UPDATE", "in a Connection")] + [("INSERT", "in a Connection")] * (3 + bool(item_9))
    with _portal(app).sessions() as session:
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "response.submit"))
        response_id = session.scalar(sa.select(Response.id))
        assert entry.target == f"response:{response_id}"
        assert entry.detail == {"instrument": "phq9", "version": link.instrument_version, "assignment": link.id}
        assert session.scalar(sa.select(Score.response_id)) == response_id
        alerts = session.execute(sa.select(Alert.response_id, Alert.client_id, Alert.rule, Alert.severity)).all()
    if item_9:  # PHQ-9 item 9 (thoughts of self-harm) above 0 raises the urgent alert, and only it at a total of 2
        assert alerts == [(response_id, link.client_id, "phq9_item9_risk", "urgent")]
    else:
        assert alerts == []


def test_a_sqlite_submission_that_fails_in_its_last_write_leaves_nothing_behind(
    app_config: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writes run straight on the DBAPI connection, but in the connection's one transaction: a failure rolls
    back the link's completion, the response, its score and its alert."""
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({**app_config, "DATABASE_URL": f"sqlite:///{tmp_path / 'fails.db'}"})
    try:
        token = _link(app)
        link = _read(app, token)
        refused = (
            sa.insert(AuditEntry.__table__).values(actor=sa.null(), action="x").returning(AuditEntry.__table__.c.id)
        )
        monkeypatch.setattr(core.responses, "_INSERT_AUDIT", DirectStatement(refused, writes=True))  # NOT NULL
        with pytest.raises(RuntimeError, match="could not be stored"):  # and again, read anew in a session
            _submit(app, link, token, {**PHQ9_ONES, "phq9_9": 2})
        assert [_count(app, model) for model in (Response, Score, Alert, AuditEntry)] == [0, 0, 0, 0]
        assert _read(app, token).receipt is None  # still open
        monkeypatch.undo()
        assert _submit(app, _read(app, token), token).created
    finally:
        app.extensions["rapportal"].db.dispose()


class ListeningPlugin:
    def __init__(self) -> None:
        self.seen: list[int] = []

    @hookimpl
    def response_submitted(self, instrument_id: str, version: str, response_id: int, result: Any) -> None:
        self.seen.append(response_id)


def test_a_plugin_listening_to_submissions_gets_them_inside_the_transaction(app):
    """With a ``response_submitted`` hook the write is not committed by itself: the hook may still abort it."""
    token = _link(app)
    link = _read(app, token)
    levels = []
    sa.event.listen(
        _portal(app).db,
        "before_cursor_execute",
        # a statement run on a pooled connection by itself (core.db.DirectStatement: the look-back) has no Connection
        lambda connection, *_args: (
            connection and levels.append(connection.get_execution_options().get("isolation_level"))
        ),
    )
    pm = _portal(app).engine.plugin_manager
    listening = ListeningPlugin()
    pm.register(listening, name="listening")
    try:
        submission = _submit(app, link, token)
    finally:
        pm.unregister(name="listening")
    assert listening.seen == [submission.response_id]
    assert "AUTOCOMMIT" not in levels


def test_a_rule_that_looks_back_reads_the_earlier_answers_and_scores_in_one_query(app, licensed_wording):
    """The SRS re-scores earlier answers (its drop flag) and its alert names the previous total: one SELECT."""
    portal = _portal(app)
    with portal.sessions.begin() as session:
        client = Client(code="LINK-3")
        session.add(client)
        tokens = [create_assignment(session, portal.engine, client, "srs")[1] for _ in range(2)]
    srs = {f"srs_{n}": value for n, value in enumerate((9.8, 9.8, 9.8, 9.8), start=1)}
    _submit(app, _read(app, tokens[0]), tokens[0], srs)
    link = _read(app, tokens[1])
    reads = []
    sa.event.listen(portal.db, "before_cursor_execute", lambda _c, _k, statement, *_a: reads.append(statement))
    _submit(app, link, tokens[1], {name: 9.5 for name in srs})
    assert [s.split()[0] for s in reads].count("SELECT") == 1, reads
    with portal.sessions() as session:
        message = session.scalar(sa.select(Alert.message).where(Alert.rule == "srs_alliance_drop"))
    assert message is not None and "39.2" in message, message


@pytest.mark.parametrize(
    ("instrument_id", "answers"),
    [("srs", {f"srs_{n}": 5.0 for n in range(1, 5)}), ("phq9", PHQ9_ONES)],
    ids=["earlier answers (SRS)", "earlier scores (a plugin's alert rule)"],
)
def test_a_link_submission_reads_what_it_looks_back_on_before_its_transaction_begins(
    app, licensed_wording, instrument_id, answers
):
    """The look-back reads what is committed, outside the transaction (core.db.DirectStatement), so the transaction
    begins with the first write: on SQLite the write lock is not held while the answers are scored and the rules
    run."""
    portal = _portal(app)
    with portal.sessions.begin() as session:
        client = Client(code="LINK-4")
        session.add(client)
        tokens = [create_assignment(session, portal.engine, client, instrument_id)[1] for _ in range(2)]
    _submit(app, _read(app, tokens[0]), tokens[0], answers)
    link = _read(app, tokens[1])
    seen = []
    sa.event.listen(
        portal.db,
        "before_cursor_execute",
        lambda connection, _cursor, statement, *_args: seen.append((statement.split()[0], connection is None)),
    )
    _submit(app, link, tokens[1], answers)
    first_write = next(n for n, (verb, _direct) in enumerate(seen) if verb in ("BEGIN", "UPDATE", "WITH", "INSERT"))
    reads = [(n, direct) for n, (verb, direct) in enumerate(seen) if verb == "SELECT"]
    assert reads and all(direct and n < first_write for n, direct in reads), seen
    if portal.db.dialect.name == "sqlite":
        assert seen[first_write][0] == "BEGIN"  # BEGIN IMMEDIATE: the write lock, taken for the writes only


def test_only_postgresql_stores_a_response_given_the_engine(app):
    """store_response given the engine writes one statement of its own, which only PostgreSQL has; SQLite needs a
    connection for its several statements, and is refused before anything is read or written."""
    portal = _portal(app)
    if portal.db.dialect.name == "postgresql":
        token = _link(app)
        stored = store_response(portal.db, portal.engine, _read(app, token).target(), PHQ9_ONES)
        assert _count(app, Response) == 1 and stored.submission.created
    else:
        token = _link(app)
        with pytest.raises(TypeError, match="give SQLite a connection"):
            store_response(portal.db, portal.engine, _read(app, token).target(), PHQ9_ONES)
        assert _count(app, Response) == 0
