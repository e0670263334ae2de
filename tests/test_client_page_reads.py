"""The client page and the caseload read without holding the write lock and draw each chart once per distinct data.

A reading view (``web.access.reading_view``) reads in a read-only session and writes only its audit entry (with a
due last-seen time), committed before the page is sent: on SQLite in one short transaction, on PostgreSQL as
statements that commit by themselves. Charts, item tables and alert lines are kept by everything they are made
from (``web.kept.KeptParts``), so a change to the data makes them anew; repeated phrases come from ``web.texts`` with
the results of flask_babel's and Jinja's own functions.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa
from flask import render_template_string
from staff_support import SRS_LOW, answer, links_on, make_world, release_latest, sign_in, start_session

import web.clinician
import web.progress
from core.care import ResponseRecord
from core.models import AuditEntry, UserSession
from web.kept import KeptParts, kept_parts
from web.texts import gettext, phrases, template_gettext

ORS_MIDDLE = {f"ors_{n}": "5.0" for n in range(1, 5)}


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def ann(app, world):
    client = app.test_client()
    sign_in(client, "ann")
    return client


def answered_session(app, ann, world, srs=SRS_LOW):
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    assert answer(app, links["ors"], ORS_MIDDLE).status_code in (200, 303)
    release_latest(app, ann)
    assert answer(app, links["srs"], srs).status_code in (200, 303)


@contextmanager
def statements(app):
    seen: list[str] = []

    def listen(_conn, _cursor, statement, *_args):
        seen.append(" ".join(statement.split()))

    engine = app.extensions["rapportal"].db
    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)


def writes(seen: list[str]) -> list[str]:
    return [s.split(" (")[0] for s in seen if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]


def set_last_seen(app, when: datetime) -> None:
    with app.extensions["rapportal"].sessions.begin() as session:
        for found in session.scalars(sa.select(UserSession).where(UserSession.ended_at.is_(None))):
            found.last_seen_at = when


def last_seen(app) -> datetime:
    with app.extensions["rapportal"].sessions() as session:
        found = session.scalars(sa.select(UserSession).where(UserSession.ended_at.is_(None))).one()
        value = found.last_seen_at
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def views(app, action: str) -> int:
    with app.extensions["rapportal"].sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == action))


@pytest.mark.parametrize(("path", "action"), [("/clients/{id}", "client.view"), ("/caseload", "caseload.view")])
def test_a_reading_view_writes_only_its_audit_entry(app, ann, world, path, action):
    answered_session(app, ann, world)
    url = path.format(id=world.client_id)
    set_last_seen(app, datetime.now(UTC))  # seen just now: no last-seen write is due
    before = views(app, action)
    with statements(app) as seen:
        assert ann.get(url).status_code == 200
    assert views(app, action) == before + 1  # committed by the time the page came back
    assert writes(seen) == ["INSERT INTO audit_entries"]
    if app.extensions["rapportal"].db.dialect.name == "sqlite":
        # the reads ran in a deferred transaction; the INSERT is a statement of its own (core.audit.store_alone),
        # which takes the write lock for itself alone: no transaction of the page begins with BEGIN IMMEDIATE
        assert seen[0] == "BEGIN"
        assert "BEGIN IMMEDIATE" not in seen


def test_on_postgresql_a_reading_view_opens_no_transaction(app, ann, world):
    """PostgreSQL: the reads run in autocommit and the audit entry commits by itself (no BEGIN, no COMMIT round
    trips); after every statement the connection is outside any transaction."""
    engine = app.extensions["rapportal"].db
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's reads share a deferred transaction (the test above)")
    answered_session(app, ann, world)
    after: list[tuple[str, bool]] = []

    def listen(conn, _cursor, statement, *_args):
        status = conn.connection.dbapi_connection.info.transaction_status
        after.append((statement.split()[0], status != psycopg.pq.TransactionStatus.IDLE))

    before = views(app, "client.view")
    sa.event.listen(engine, "after_cursor_execute", listen)
    try:
        assert ann.get(f"/clients/{world.client_id}").status_code == 200
    finally:
        sa.event.remove(engine, "after_cursor_execute", listen)
    assert ("SELECT", False) in after
    assert [statement for statement, in_transaction in after if in_transaction] == []
    # the entry is one INSERT on a pooled connection in autocommit (core.audit.store_alone), past SQLAlchemy's
    # connection and its events after the statement
    assert views(app, "client.view") == before + 1


def test_a_reading_view_stores_a_due_last_seen_time_with_its_audit_entry(app, ann, world):
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    set_last_seen(app, long_ago)
    with statements(app) as seen:
        assert ann.get(f"/clients/{world.client_id}").status_code == 200
    assert sorted(statement.split(" SET")[0] for statement in writes(seen)) == [
        "INSERT INTO audit_entries",
        "UPDATE user_sessions",
    ]
    if app.extensions["rapportal"].db.dialect.name == "sqlite":
        assert seen.count("BEGIN IMMEDIATE") == 1
    assert last_seen(app) > long_ago + timedelta(minutes=4)


def test_a_reading_view_that_writes_no_audit_entry_still_stores_a_due_last_seen_time(app, ann, world):
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    set_last_seen(app, long_ago)
    assert ann.get("/clients/999999").status_code == 404
    assert last_seen(app) > long_ago + timedelta(minutes=4)


def test_an_idle_session_ends_on_a_reading_view_and_shows_nothing(app, ann, world):
    set_last_seen(app, datetime.now(UTC) - timedelta(minutes=app.config["SESSION_IDLE_MINUTES"] + 1))
    before = views(app, "client.view")
    assert ann.get(f"/clients/{world.client_id}").status_code == 302
    assert views(app, "client.view") == before
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalars(sa.select(UserSession)).all()[-1].end_reason == "idle_timeout"


def without_tokens(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]*"|<meta name="csrf-token" content="[^"]*"', "", html)


@pytest.fixture
def drawn(monkeypatch) -> list[str]:
    """The ids of the charts drawn (``web.progress.line_chart``), in order: each drawing of each layout."""
    ids: list[str] = []
    line_chart = web.progress.line_chart
    monkeypatch.setattr(
        web.progress, "line_chart", lambda chart_id, *a, **k: ids.append(chart_id) or line_chart(chart_id, *a, **k)
    )
    return ids


def test_a_chart_is_drawn_once_while_what_it_shows_stays_the_same(app, ann, world, drawn):
    answered_session(app, ann, world)
    first = ann.get(f"/clients/{world.client_id}").text
    assert drawn  # drawn on the first view (wide and narrow)
    count = len(drawn)
    again = ann.get(f"/clients/{world.client_id}").text
    assert len(drawn) == count  # not drawn again
    assert without_tokens(again) == without_tokens(first)
    web.progress.drawn_charts(app).clear()
    assert without_tokens(ann.get(f"/clients/{world.client_id}").text) == without_tokens(first)  # as drawn afresh


def test_a_new_answer_or_alert_draws_the_chart_anew(app, ann, world, drawn):
    answered_session(app, ann, world, srs={f"srs_{n}": "9.5" for n in range(1, 5)})  # 38: no alert
    first = ann.get(f"/clients/{world.client_id}").text
    assert "alert-ring" not in first
    answered_session(app, ann, world)  # 32: raises the SRS alert, and a second ORS
    page = ann.get(f"/clients/{world.client_id}").text
    assert "alert-ring" in page and ">S2<" in page
    assert drawn.count("chart-srs-total") == drawn.count("chart-ors-total") == 2
    cached = len(web.progress.drawn_charts(app))
    assert cached >= 2  # the charts of either state are kept, each under its own data


def test_a_chart_is_drawn_again_in_another_language(app, ann, world, drawn):
    answered_session(app, ann, world)
    english = ann.get(f"/clients/{world.client_id}").text
    german = ann.get(f"/clients/{world.client_id}", headers={"Accept-Language": "de"}).text
    assert drawn.count("chart-ors-total") == 2  # once per language
    with app.test_request_context("/", headers={"Accept-Language": "de"}):
        within = gettext("within the cutoff")
    assert within != "within the cutoff" and within in german and "within the cutoff" in english


def test_a_recomputed_expected_change_table_draws_the_outcome_chart_anew(app, ann, world, drawn, monkeypatch):
    """A chart is kept by the expected-change table it was drawn with: a table recomputed from the clinic's episodes
    is drawn from, whether or not its figures moved."""
    answered_session(app, ann, world)
    first = without_tokens(ann.get(f"/clients/{world.client_id}").text)
    assert without_tokens(ann.get(f"/clients/{world.client_id}").text) == first
    assert drawn.count("chart-ors-total") == 1  # the table is kept (EXPECTED_CACHE_SECONDS), and so is the chart
    expected = app.extensions["rapportal"].engine.expected
    monkeypatch.setattr(expected, "settings", dataclasses.replace(expected.settings, cache_seconds=0))
    assert without_tokens(ann.get(f"/clients/{world.client_id}").text) == first  # the same figures
    assert drawn.count("chart-ors-total") == 2  # drawn from the new table


def test_an_item_table_is_made_once_while_the_answers_stay_the_same(app, ann, world, monkeypatch):
    answered_session(app, ann, world)
    made: list[str] = []
    item_table = web.clinician._item_table
    monkeypatch.setattr(
        web.clinician, "_item_table", lambda instrument, *a: made.append(instrument.id) or item_table(instrument, *a)
    )
    first = without_tokens(ann.get(f"/clients/{world.client_id}").text)
    assert sorted(made) == ["ors", "srs"] and 'scope="row">ors_1 <span class="muted">' in first
    assert without_tokens(ann.get(f"/clients/{world.client_id}").text) == first
    assert len(made) == 2  # kept
    answered_session(app, ann, world)
    page = ann.get(f"/clients/{world.client_id}").text
    assert len(made) == 4  # a new answer makes both tables anew
    assert page.count('<th scope="col"><a href="/responses/') == 4  # S1 and S2 in each table


def test_an_item_table_with_an_answer_that_cannot_be_a_key_is_made_for_its_page(app):
    """A list of choices (a plugin's multiple-choice item) cannot be part of a key: the table is made, not kept."""
    srs = app.extensions["rapportal"].engine.instruments.get("srs")
    answers = {"srs_1": ["a", "<b>"], "srs_2": 7, "srs_3": None, "srs_4": "x&y"}
    response = ResponseRecord(41, "srs", srs.version, datetime(2026, 12, 1, 10, 0), answers, 3)
    with app.test_request_context("/"):
        before = len(kept_parts("item_tables", web.clinician.ITEM_TABLES))
        (table,) = web.clinician._item_detail([(response, None)])
        assert len(kept_parts("item_tables", web.clinician.ITEM_TABLES)) == before
    assert "&lt;b&gt;" in table.body and "<td>7</td>" in table.body and "x&amp;y" in table.body
    assert ">S3</a></th>" in table.header


def test_an_alert_line_is_kept_per_alert_and_language(app, ann, world):
    answered_session(app, ann, world)  # the SRS below its cutoff raises an alert
    kept = kept_parts("alert_lines", web.clinician.ALERT_LINES, app)
    kept.clear()
    first = without_tokens(ann.get(f"/clients/{world.client_id}").text)
    lines = len(kept)
    assert lines >= 1 and 'class="staff-alert severity-' in first and ">answers</a>)" in first
    assert without_tokens(ann.get(f"/clients/{world.client_id}").text) == first
    assert len(kept) == lines  # kept
    # the caseload's lines have no tick box: another line each, in English and then in German
    english = ann.get("/caseload").text
    assert len(kept) == 2 * lines and ">answers</a>)" in english
    german = ann.get("/caseload", headers={"Accept-Language": "de"}).text
    assert len(kept) == 3 * lines
    with app.test_request_context("/", headers={"Accept-Language": "de"}):
        assert f">{gettext('answers')}</a>)" in german and gettext("answers") != "answers"
    assert without_tokens(ann.get("/caseload").text) == without_tokens(english)  # the English lines as they were


def test_kept_parts_are_bounded_and_drop_the_least_recently_used(app):
    kept = KeptParts(size=2)
    for n in range(5):
        kept.put(("chart", n), {"n": n})
    assert len(kept) == 2 and kept.get(("chart", 0)) is None and kept.get(("chart", 4)) == {"n": 4}
    assert kept.get(("chart", 3)) == {"n": 3}  # used: kept when the next one comes
    assert kept.get_or_make(("chart", 9), lambda: {"n": 9}) == {"n": 9}
    assert kept.get(("chart", 4)) is None and kept.get(("chart", 3)) == {"n": 3}
    assert kept.get_or_make(("chart", 9), lambda: {"n": "made again"}) == {"n": 9}


def test_phrases_translate_and_format_as_flask_babel_and_jinja_do(app):
    from flask_babel import format_date
    from flask_babel import gettext as babel_gettext

    moment = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    with app.test_request_context("/", headers={"Accept-Language": "de"}):
        assert gettext("answers") == babel_gettext("answers") != "answers"
        assert gettext("session %(n)s", n=3) == babel_gettext("session %(n)s", n=3)
        assert phrases().date(moment, "d MMM yyyy") == format_date(moment, "d MMM yyyy")
        naive = moment.replace(tzinfo=None)  # as SQLite hands a stored time back
        assert phrases().date(naive, "d MMM yyyy") == format_date(moment, "d MMM yyyy")
        elsewhere = datetime(2026, 12, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 23:30 UTC the day before
        assert phrases().date(elsewhere, "d MMM yyyy") == format_date(elsewhere, "d MMM yyyy")
        source = '{{ _("Client %(code)s", code=code) }}|{{ _("answers") }}|{{ _("100%%") }}'
        jinja = render_template_string(source, code="<b>&")
        ours = render_template_string(source, code="<b>&", _=template_gettext)
        assert ours == jinja and "&lt;b&gt;&amp;" in ours


def test_lazy_texts_translate_as_flask_babel_does(app):
    from flask_babel import lazy_gettext as babel_lazy

    from web.texts import lazy_gettext

    ours, theirs = lazy_gettext("Session %(n)s", n=4), babel_lazy("Session %(n)s", n=4)
    with app.test_request_context("/", headers={"Accept-Language": "de"}):
        assert str(ours) == str(theirs) != "Session 4"
        assert str(lazy_gettext("Measurement plan")) == str(babel_lazy("Measurement plan")) != "Measurement plan"
    assert str(ours) == str(theirs) == "Session 4"  # outside the app: the message as written


def test_the_client_page_runs_as_many_statements_for_three_sessions_as_for_one(app, ann, world):
    """The record is read in a fixed number of statements (core.care.load_client_record): no query per session,
    questionnaire, response or alert."""
    answered_session(app, ann, world)
    ann.get(f"/clients/{world.client_id}")  # fills the clinic's expected-change figures, kept for a while
    with statements(app) as one:
        assert ann.get(f"/clients/{world.client_id}").status_code == 200
    answered_session(app, ann, world)
    answered_session(app, ann, world)
    ann.get(f"/clients/{world.client_id}")
    with statements(app) as three:
        page = ann.get(f"/clients/{world.client_id}")
    # the reads (a due last-seen time may add a write to either view)
    reads_one, reads_three = ([s for s in seen if s.startswith("SELECT")] for seen in (one, three))
    assert len(reads_three) == len(reads_one), "\n".join(reads_one)
    # and the page shows all three, with each session's questionnaires answered
    assert [label for label in ("Session 1", "Session 2", "Session 3") if f">{label}</a>" in page.text] == [
        "Session 1",
        "Session 2",
        "Session 3",
    ]
    assert page.text.count("ORS: answered; SRS: answered") == 3


def test_the_caseload_applies_the_visibility_rule_once_and_reads_the_rest_by_client_id(app, ann, world):
    """core.care.view_caseload finds the clients through the visibility rule (a subquery), then reads their alerts,
    pending links and last answers by their ids: a planner that cannot tell how few clients the subquery keeps
    scanned every alert, link and response of the portal for each of those reads. The ids are written in as
    literals: as one bound parameter each, 200 of them cost PostgreSQL's driver about 1 ms per statement."""
    answered_session(app, ann, world)
    with statements(app) as seen:
        page = ann.get("/caseload")
    assert page.status_code == 200
    ruled = [s for s in seen if "FROM client_clinicians" in s]
    assert len(ruled) == 1 and ruled[0].startswith("SELECT clients.id, clients.code"), "\n".join(ruled)
    by_id = [s for s in seen if s.startswith("SELECT") and re.search(r"FROM (alerts|assignments|responses) WHERE", s)]
    # the ids written into the statement (core.care._among), not bound one parameter each
    assert len(by_id) == 3 and all(re.search(r"\.client_id IN \(\d+", s) for s in by_id), "\n".join(by_id)


@pytest.mark.parametrize("show", ["on", "off"])
def test_the_select_macro_writes_what_the_wtforms_widget_writes(app, show):
    """The client page writes its two selects with ``auth/macros.html``'s ``select`` instead of WTForms' widget (a
    fifth of the cost): the HTML must stay the same, the chosen option included."""
    from web.access import make_form
    from web.clinician import EpisodeForm, ProgressForm

    with app.test_request_context("/", headers={"Accept-Language": "de"}):
        source = '{% from "auth/macros.html" import select %}{{ select(f) }}'
        for field in (make_form(EpisodeForm).plan, make_form(ProgressForm, show=show).show):
            assert render_template_string(source, f=field) == str(field())
        assert 'selected value="' + show + '"' in render_template_string(
            source, f=make_form(ProgressForm, show=show).show
        )
