"""The audit trail: what is recorded, who can browse it, and that it is append-only."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from staff_support import (
    ORS_ANSWERS,
    answer,
    audit_actions,
    links_on,
    make_world,
    page_token,
    release_latest,
    sign_in,
    start_session,
    web_export,
)

from core.audit import PendingEntries, record, store_alone
from core.models import AuditEntry


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


def test_logins_views_changes_and_admin_actions_are_recorded(app, world):
    app.test_client().post("/login")  # no CSRF: not even counted as an attempt
    sign_in(app.test_client(), "ann", "wrong password here")
    ann = app.test_client()
    sign_in(ann, "ann")
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    answer(app, links["ors"], ORS_ANSWERS)
    ann.get(f"/clients/{world.client_id}")
    admin = app.test_client()
    sign_in(admin, "admin")
    token = page_token(admin, "/admin/users")
    admin.post("/admin/users", data={"csrf_token": token, "username": "cleo", "role": "auditor", "password": "x" * 12})
    actions = audit_actions(app)
    names = [action for _actor, action, _target in actions]
    for expected in (
        "login.failure",
        "login.success",
        "session.create",
        "response.submit",
        "client.view",
        "user.create",
    ):
        assert expected in names, expected
    assert ("user:ann", "client.view", f"client:{world.client_id}") in actions
    with app.extensions["rapportal"].sessions() as session:
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "login.success"))
    assert entry.address == "127.0.0.1" and entry.at is not None


def test_audit_entries_cannot_be_changed_or_deleted(app, world):
    sessions = app.extensions["rapportal"].sessions
    with sessions.begin() as session:
        record(session, "test", "something")
    with sessions() as session:
        entry = session.scalar(sa.select(AuditEntry).order_by(AuditEntry.id.desc()))
        entry.action = "rewritten"
        with pytest.raises(PermissionError):
            session.flush()
        session.rollback()
        with pytest.raises(PermissionError):
            session.delete(session.get(AuditEntry, entry.id))
            session.flush()
        session.rollback()
        with pytest.raises(PermissionError):
            session.execute(sa.delete(AuditEntry))
        with pytest.raises(PermissionError):
            session.execute(sa.update(AuditEntry).values(actor="someone else"))


def test_administrators_and_auditors_browse_and_filter(app, world):
    sign_in(app.test_client(), "ann")
    sign_in(app.test_client(), "bob")
    for name in ("admin", "audrey"):
        viewer = app.test_client()
        sign_in(viewer, name)
        page = viewer.get("/admin/audit?actor=ann&action=login").text
        assert "user:ann" in page and "user:bob" not in page


def test_a_bad_filter_date_is_named(app, world):
    viewer = app.test_client()
    sign_in(viewer, "audrey")
    response = viewer.get("/admin/audit?since=yesterday")
    assert response.status_code == 422 and "since: &#39;yesterday&#39; is not a date" in response.text


def test_audit_filter_values_are_escaped(app, world):
    viewer = app.test_client()
    sign_in(viewer, "admin")
    response = viewer.get('/admin/audit?actor="><script>x</script>')
    assert response.status_code == 200
    assert "<script>x</script>" not in response.text and "&lt;script&gt;x&lt;/script&gt;" in response.text


@pytest.mark.parametrize("statement", ["UPDATE audit_entries SET actor = 'forged'", "DELETE FROM audit_entries"])
def test_the_database_refuses_to_change_audit_rows_whatever_connects(app, statement):
    from core.models import AuditEntry

    db = app.extensions["rapportal"].db
    with db.begin() as connection:
        connection.execute(sa.insert(AuditEntry).values(actor="t", action="test", detail={}))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.begin() as connection:
        connection.exec_driver_sql(statement)
    with db.connect() as connection:
        assert connection.scalar(sa.select(AuditEntry.actor)) == "t"


def test_a_core_update_through_a_session_is_refused_before_it_reaches_the_database(app):
    from core.models import AuditEntry

    with app.extensions["rapportal"].sessions() as session, pytest.raises(PermissionError):
        session.execute(sa.update(AuditEntry.__table__).values(actor="forged"))


def test_record_cuts_values_to_their_column_widths(app):
    with app.extensions["rapportal"].sessions.begin() as session:
        entry = record(session, "a" * 300, "export", "export:" + "x" * 300, "1" * 100, rows=1)
    assert (len(entry.actor), len(entry.target), len(entry.address)) == (128, 128, 64)


def test_an_entry_stored_alone_holds_what_the_orm_would_have_stored(app):
    """``store_alone``, a reading page's entry written by one INSERT of its own, stores every value as a flush would:
    the time, the cut strings, the JSON detail."""
    state = app.extensions["rapportal"]
    made = record(PendingEntries(), "user:ann", "client.view", "client:7", "10.0.0." + "1" * 80, episode=3, tags=["a"])
    store_alone(state.db, made)
    with state.sessions.begin() as session:  # the same entry through the ORM's flush
        record(session, "user:ann", "client.view", "client:7", "10.0.0." + "1" * 80, at=made.at, episode=3, tags=["a"])
    with state.sessions() as session:
        alone, orm = session.scalars(sa.select(AuditEntry).where(AuditEntry.target == "client:7").order_by("id"))
        columns = ("at", "actor", "action", "target", "address", "detail")
        assert [getattr(alone, name) for name in columns] == [getattr(orm, name) for name in columns]
        assert alone.detail == {"episode": 3, "tags": ["a"]} and len(alone.address) == 64


def test_an_entry_that_cannot_be_stored_alone_raises_and_leaves_nothing(app):
    state = app.extensions["rapportal"]
    made = record(PendingEntries(), "user:ann", "client.view", "client:8", None)
    made.actor = None  # NOT NULL
    with pytest.raises(sa.exc.IntegrityError):
        store_alone(state.db, made)
    with state.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).where(AuditEntry.target == "client:8")) == 0


def _strings(value):
    """Every key and string value in an audit detail, at any depth."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)
    elif isinstance(value, str):
        yield value


def test_a_clinical_day_leaves_no_answer_score_flag_or_rule_name_in_the_trail(app, world):
    """Intake, answers that raise an urgent and a warning alert, a kiosk, acknowledgements and an export."""
    import re

    from staff_support import SRS_LOW, csrf

    engine = app.extensions["rapportal"].engine
    ann = app.test_client()
    sign_in(ann, "ann")
    token = page_token(ann, f"/clients/{world.client_id}")
    ann.post(
        f"/clients/{world.client_id}/episodes",
        data={"csrf_token": token, "plan": "pcoms-phq9", "title": "Depression, second episode"},
    )
    episode_id = world.episode_id + 2  # make_world made two episodes
    links = links_on(start_session(ann, episode_id, world.client_id).text)
    answer(app, links["ors"], ORS_ANSWERS)
    answer(app, links["phq9"], {f"phq9_{n}": "2" for n in range(1, 10)})  # item 9 above zero: urgent
    release_latest(app, ann)
    answer(app, links["srs"], SRS_LOW)  # below the cutoff: a warning
    page = ann.get(f"/clients/{world.client_id}").text
    for alert_id in re.findall(r'name="alert" value="(\d+)"', page):  # the client page's alert checkboxes
        ann.post(f"/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf(page), "note": "Safety plan made"})
    ann.get("/caseload")
    for response_id in re.findall(r'href="/responses/(\d+)"', page):
        ann.get(f"/responses/{response_id}")
    start_session(ann, episode_id, world.client_id)
    kiosk = ann.post("/sessions/2/kiosk", data={"csrf_token": page_token(ann, "/sessions/2")})
    assert kiosk.status_code == 302
    device = ann  # the tablet: the clinician was signed out on it
    form = device.get("/kiosk").text
    assignment = re.search(r'name="assignment" value="(\d+)"', form).group(1)
    device.post("/kiosk", data={**ORS_ANSWERS, "csrf_token": csrf(form), "assignment": assignment})
    lock_token = csrf(device.get("/kiosk").text.split('class="kiosk-lock"')[1])
    assert device.post("/kiosk/lock", data={"csrf_token": lock_token}).status_code == 303
    admin = app.test_client()
    sign_in(admin, "admin")
    export = web_export(app, admin, {"format": "csv"})
    assert export.status_code == 200 and export.data

    forbidden = set(engine.alert_rules)
    for instrument in engine.instruments:
        forbidden |= set(instrument.scoring.flag_ids) | {band.id for band in instrument.scoring.bands}
        forbidden |= {spec.name for spec in instrument.scoring.scores} | {item.id for item in instrument.items}
        forbidden |= {option.label for item in instrument.items for option in item.options}
    forbidden |= {"Safety plan made", "Depression, second episode"}
    with app.extensions["rapportal"].sessions() as session:
        entries = session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
    actions = {entry.action for entry in entries}
    assert {"response.submit", "alert.acknowledge", "kiosk.unlock", "kiosk.lock", "client.view"} <= actions
    assert {"export.started", "export.finished", "export.downloaded"} <= actions
    assert sum(entry.action == "alert.acknowledge" for entry in entries) == 2
    for entry in entries:
        words = {entry.actor, entry.action, entry.target or "", *_strings(entry.detail)}
        assert not words & forbidden, (entry.action, entry.detail, words & forbidden)


def test_browsing_the_trail_filters_pages_and_is_itself_recorded(app):
    from datetime import UTC, datetime

    from core.audit import browse_audit

    sessions = app.extensions["rapportal"].sessions
    with sessions.begin() as session:
        for number in range(5):
            record(session, "user:ann", "client.view", f"client:{number}", at=datetime(2026, 3, 1 + number, tzinfo=UTC))
        record(session, "user:bob", "client.view", "client:9", at=datetime(2026, 3, 3, tzinfo=UTC))
    with sessions.begin() as session:
        first, more = browse_audit(session, contains={"actor": "ann"}, page_size=2, viewer="user:audrey", address=None)
        assert [e.target for e in first] == ["client:4", "client:3"] and more
        last, more = browse_audit(
            session, contains={"actor": "ann"}, page=3, page_size=2, viewer="user:audrey", address=None
        )
        assert [e.target for e in last] == ["client:0"] and not more
        dated, _more = browse_audit(
            session,
            contains={},
            since=datetime(2026, 3, 3, tzinfo=UTC),
            before=datetime(2026, 3, 4, tzinfo=UTC),
            viewer="user:audrey",
            address=None,
        )
        assert sorted(e.target for e in dated) == ["client:2", "client:9"]
    with sessions() as session:
        views = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "audit.view")).all()
    assert len(views) == 3 and views[0].detail == {"filters": {"actor": "ann"}, "page": 1}
    assert views[2].detail["filters"] == {"since": "2026-03-03", "before": "2026-03-04"}
