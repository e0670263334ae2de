"""core/care.py: episodes, sessions and their links, links, kiosks and alerts, each checked and audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from core.accounts import create_user, start_session
from core.care import (
    acknowledge_alert,
    alert_session_numbers,
    cancel_care_session,
    expire_link,
    find_kiosk,
    kiosk_next,
    kiosk_waiting,
    lock_kiosk,
    open_alerts,
    reissue_link,
    release_end_of_session,
    start_care_session,
    start_episode,
    submit_for_kiosk,
    unlock_kiosk,
    view_care_session,
    view_caseload,
    view_client,
    view_response,
    visible_record,
)
from core.db import create_schema, make_db_engine, make_session_factory
from core.errors import Conflict, InvalidInput, NotFound
from core.models import Alert, Assignment, AuditEntry, CareSession, Client, Episode, Response, UserSession
from core.responses import LinkError, create_assignment, find_assignment, is_expired, submit_by_token

PLAN = "phq9 start every 1; gad7 end every 1"
PHQ9_RISK = {f"phq9_{n}": 1 for n in range(1, 10)}  # item 9 above zero: an urgent alert
GAD7 = {f"gad7_{n}": 0 for n in range(1, 8)}
WHO = {"actor": "user:ann", "address": "192.0.2.1"}


@pytest.fixture
def db(db_url):
    engine = make_db_engine(db_url)
    create_schema(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        ann = create_user(session, "ann", "Ann", "clinician", "a long test password", actor="test", address=None)
        session.add(Client(code="C-1", clinician_id=ann.id))
    yield sessions
    engine.dispose()


@pytest.fixture
def episode_id(db, engine):
    with db.begin() as session:
        client = session.scalar(sa.select(Client))
        return start_episode(session, engine, client, title="First", plan="custom", custom_plan=PLAN, **WHO).id


def _start(db, engine, episode_id, number=1):
    with db.begin() as session:
        started = start_care_session(session, engine, session.get(Episode, episode_id), number=number, **WHO)
        return started, [(link.assignment.id, link.token, link.moment) for link in started.links]


def _actions(db):
    with db() as session:
        return [e.action for e in session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))]


# -- episodes ---------------------------------------------------------------------------


def test_a_new_episode_ends_the_open_one_and_keeps_a_copy_of_its_plan(db, engine, episode_id):
    with db.begin() as session:
        client = session.scalar(sa.select(Client))
        second = start_episode(session, engine, client, title=None, plan="pcoms", **WHO)
    with db() as session:
        first = session.get(Episode, episode_id)
        assert first.ended_at is not None and first.plan[0] == {
            "instrument": "phq9",
            "moment": "start",
            "every": 1,
            "first": 1,
        }
        assert session.get(Episode, second.id).ended_at is None
    assert _actions(db).count("episode.create") == 2


@pytest.mark.parametrize(
    ("plan", "custom", "field"),
    [("custom", "nonsense start", "custom"), ("nope", None, "plan"), ("custom", "", "custom")],
)
def test_a_bad_plan_is_refused_naming_the_field(db, engine, plan, custom, field):
    with db() as session, pytest.raises(InvalidInput) as refused:
        start_episode(
            session, engine, session.scalar(sa.select(Client)), title=None, plan=plan, custom_plan=custom, **WHO
        )
    assert refused.value.field == field


# -- sessions and links -----------------------------------------------------------------


def test_a_session_makes_the_links_its_plan_gives_start_first(db, engine, episode_id):
    started, links = _start(db, engine, episode_id)
    assert started.created and started.skipped == ()
    assert [moment for _id, _token, moment in links] == ["start", "end"]
    with db() as session:
        stored = session.scalars(sa.select(Assignment).order_by(Assignment.id)).all()
        assert [a.instrument_id for a in stored] == ["phq9", "gad7"]
        assert all(find_assignment(session, token) is not None for _id, token, _m in links)
        assert all(token not in a.token_hash for a in stored for _id, token, _m in links)
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "session.create"))
        assert entry.detail["number"] == 1 and entry.detail["assignments"] == [a.id for a in stored]


def test_starting_the_same_session_again_makes_nothing(db, engine, episode_id):
    _start(db, engine, episode_id)
    again, links = _start(db, engine, episode_id, number=1)
    assert not again.created and links == []
    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(CareSession)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(Assignment)) == 2
    assert _actions(db).count("session.create") == 1


def test_a_session_number_beyond_the_next_is_refused(db, engine, episode_id):
    with pytest.raises(Conflict, match="next session of this episode is session 1"):
        _start(db, engine, episode_id, number=2)


def test_an_ended_episode_starts_no_session(db, engine, episode_id):
    with db.begin() as session:
        start_episode(session, engine, session.scalar(sa.select(Client)), title=None, plan="symptoms", **WHO)
    with pytest.raises(Conflict, match="ended"):
        _start(db, engine, episode_id)


def test_an_empty_session_can_be_cancelled_and_its_number_is_free_again(db, engine, episode_id):
    started, links = _start(db, engine, episode_id)
    with db.begin() as session:
        cancel_care_session(session, session.get(CareSession, started.care.id), **WHO)
    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(CareSession)) == 0
        assert all(find_assignment(session, token) is None for _id, token, _m in links)
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "session.cancel"))
        assert entry.target == "client:1" and entry.detail == {"care_session": started.care.id, "number": 1}
    again, _links = _start(db, engine, episode_id, number=1)
    assert again.created


def test_a_session_with_an_answer_cannot_be_cancelled(db, engine, episode_id):
    started, links = _start(db, engine, episode_id)
    submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    with db() as session, pytest.raises(Conflict, match="has answers"):
        cancel_care_session(session, session.get(CareSession, started.care.id), **WHO)


def test_only_the_latest_session_can_be_cancelled(db, engine, episode_id):
    first, _links = _start(db, engine, episode_id)
    _start(db, engine, episode_id, number=2)
    with db() as session, pytest.raises(Conflict, match="latest"):
        cancel_care_session(session, session.get(CareSession, first.care.id), **WHO)


def test_reissuing_a_link_stops_the_old_one(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    assignment_id, old, _moment = links[0]
    with db.begin() as session:
        new = reissue_link(session, session.get(Assignment, assignment_id), **WHO)
        assert new.moment == "start"
    with db() as session:
        assert find_assignment(session, old) is None
        assert find_assignment(session, new.token).id == assignment_id
    assert "link.reissue" in _actions(db)


def test_an_answered_link_is_neither_reissued_nor_expired(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    with db() as session:
        assignment = session.get(Assignment, links[0][0])
        with pytest.raises(Conflict):
            reissue_link(session, assignment, **WHO)
        with pytest.raises(Conflict):
            expire_link(session, assignment, **WHO)


def test_an_expired_link_cannot_be_answered(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    with db.begin() as session:
        expire_link(session, session.get(Assignment, links[0][0]), **WHO)
    with pytest.raises(LinkError) as refused:
        submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    assert refused.value.reason == "expired"
    assert "link.expire" in _actions(db)


# -- kiosk ---------------------------------------------------------------------------------


def _kiosk(db, engine, episode_id):
    started, _links = _start(db, engine, episode_id)
    with db.begin() as session:
        ann_session = session.get(UserSession, _sign_in(session))
        kiosk, token = unlock_kiosk(
            session, session.get(CareSession, started.care.id), user_session=ann_session, hours=4, **WHO
        )
        return kiosk.id, token, ann_session.id


def _sign_in(session):
    user = session.scalar(sa.select(Client)).clinician
    start_session(session, user, None)
    return session.scalar(sa.select(UserSession.id).order_by(UserSession.id.desc()))


def test_unlocking_a_kiosk_signs_the_clinician_out_and_hands_over_the_pending_questionnaires(db, engine, episode_id):
    kiosk_id, token, user_session_id = _kiosk(db, engine, episode_id)
    with db() as session:
        assert session.get(UserSession, user_session_id).end_reason == "kiosk"
        kiosk = find_kiosk(session, token)
        assert kiosk.id == kiosk_id and kiosk_next(session, kiosk).instrument_id == "phq9"
        assert find_kiosk(session, "not-the-token") is None
        assert find_kiosk(session, token, now=datetime.now(UTC) + timedelta(hours=5)) is None


def test_a_kiosk_answer_takes_the_links_path_and_a_repeat_stores_nothing_more(db, engine, episode_id):
    kiosk_id, token, _ = _kiosk(db, engine, episode_id)
    with db() as session:
        first = kiosk_next(session, find_kiosk(session, token)).id
    stored = submit_for_kiosk(db, engine, kiosk_id, first, PHQ9_RISK, address=None)
    repeat = submit_for_kiosk(db, engine, kiosk_id, first, PHQ9_RISK, address=None)
    assert stored.created and not repeat.created and repeat.receipt == stored.receipt
    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Response)) == 1
        assert session.scalar(sa.select(Alert.severity)) == "urgent"  # alerts as for a link
        kiosk = find_kiosk(session, token)
        assert kiosk_next(session, kiosk) is None and kiosk_waiting(session, kiosk)  # the end measure waits
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "response.submit"))
        assert entry.actor == f"kiosk:{kiosk_id}"


def test_a_locked_kiosk_takes_no_answer(db, engine, episode_id):
    kiosk_id, token, _ = _kiosk(db, engine, episode_id)
    with db.begin() as session:
        kiosk = find_kiosk(session, token)
        first = kiosk_next(session, kiosk).id
        lock_kiosk(session, kiosk, reason="locked", address=None)
    with pytest.raises(LinkError):
        submit_for_kiosk(db, engine, kiosk_id, first, PHQ9_RISK, address=None)
    with db() as session:
        assert find_kiosk(session, token) is None
        assert session.scalar(sa.select(AuditEntry.detail).where(AuditEntry.action == "kiosk.lock")) == {
            "reason": "locked"
        }


def test_a_kiosk_answers_only_its_own_questionnaires(db, engine, episode_id):
    kiosk_id, _token, _ = _kiosk(db, engine, episode_id)
    _second, links = _start(db, engine, episode_id, number=2)
    with pytest.raises(LinkError):
        submit_for_kiosk(db, engine, kiosk_id, links[0][0], PHQ9_RISK, address=None)


def test_a_session_without_pending_questionnaires_cannot_be_handed_over(db, engine, episode_id):
    started, links = _start(db, engine, episode_id)
    with db.begin() as session:
        care = session.get(CareSession, started.care.id)
        release_end_of_session(session, care.episode.client.clinician, care, **WHO)
    for _id, token, _moment in links:
        submit_by_token(db, engine, token, PHQ9_RISK if _moment == "start" else GAD7)
    with db() as session, pytest.raises(Conflict, match="no questionnaires left"):
        unlock_kiosk(
            session,
            session.get(CareSession, started.care.id),
            user_session=session.get(UserSession, _sign_in(session)),
            hours=4,
            **WHO,
        )


# -- alerts --------------------------------------------------------------------------------


def test_acknowledging_an_alert_needs_a_note_and_the_trail_never_names_its_rule(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    with db.begin() as session:
        alert = session.scalar(sa.select(Alert))
        with pytest.raises(InvalidInput) as refused:
            acknowledge_alert(session, alert, user_id=1, note="   ", **WHO)
        assert refused.value.field == "note"
        with pytest.raises(InvalidInput):
            acknowledge_alert(session, alert, user_id=1, note="x" * 2001, **WHO)
        assert acknowledge_alert(session, alert, user_id=1, note=" Called the client ", **WHO) is True
        assert acknowledge_alert(session, alert, user_id=1, note="again", **WHO) is False
    with db() as session:
        alert = session.scalar(sa.select(Alert))
        assert alert.note == "Called the client" and alert.acknowledged_by == 1
        entries = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "alert.acknowledge")).all()
        assert len(entries) == 1 and entries[0].detail == {"alert": alert.id}
        assert alert.rule not in str(entries[0].detail)


def test_expired_helper_agrees_with_the_links_lifetime(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    with db() as session:
        assignment = session.get(Assignment, links[0][0])
        assert not is_expired(assignment)
        assert is_expired(assignment, now=datetime.now(UTC) + timedelta(days=8))


# -- reads of client data ------------------------------------------------------------------


def test_the_client_page_shows_open_alerts_of_any_episode_and_every_alert_of_its_own_responses(db, engine, episode_id):
    """view_client: the client's open alerts whatever their episode, and the alerts the page's responses raised
    (open or acknowledged, they mark the charts); an acknowledged alert of another episode is on neither list."""
    _started, links = _start(db, engine, episode_id)
    first = submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    _started, links = _start(db, engine, episode_id, number=2)
    second = submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    with db.begin() as session:
        ann = session.scalar(sa.select(Client)).clinician
        closed = session.scalar(sa.select(Alert).where(Alert.response_id == first.response_id))
        assert acknowledge_alert(session, closed, user_id=ann.id, note="Called the client.", **WHO)
        still_open = session.scalar(sa.select(Alert).where(Alert.response_id == second.response_id))
        later = start_episode(session, engine, ann.clients[0], title="Second", plan="custom", custom_plan=PLAN, **WHO)
        closed_id, open_id, later_id = closed.id, still_open.id, later.id
    with db() as session:
        ann = session.scalar(sa.select(Client)).clinician
        first_episode = view_client(session, ann, 1, episode_id=episode_id, **WHO)
        assert [a.id for a in first_episode.alerts] == [open_id]
        assert [a.id for a in first_episode.raised] == [open_id, closed_id]  # newest first
        assert first_episode.raised[1].note == "Called the client." and first_episode.raised[1].acknowledged_at
        later_episode = view_client(session, ann, 1, episode_id=later_id, **WHO)
        assert later_episode.responses == [] and later_episode.raised == []
        assert [a.id for a in later_episode.alerts] == [open_id]  # still open: shown whatever the episode


def test_alert_records_show_what_the_session_holds_before_it_is_flushed(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    with db() as session:
        alert = session.scalar(sa.select(Alert))
        assert [found.id for found in open_alerts(session, [alert.client_id])] == [alert.id]
        alert.acknowledged_at = datetime.now(UTC)  # changed in the session, not yet flushed
        assert open_alerts(session, [alert.client_id]) == []  # the records are read after a flush, as ORM queries
        session.rollback()


def test_an_alert_is_labelled_with_its_sessions_number_and_one_outside_a_session_with_none(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    in_session = submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    with db.begin() as session:
        _assignment, token = create_assignment(session, engine, session.scalar(sa.select(Client)), "phq9")
    outside = submit_by_token(db, engine, token, PHQ9_RISK)  # a link sent outside any session
    with db() as session:
        alerts = open_alerts(session, [session.scalar(sa.select(Client.id))])
        by_response = {alert.response_id: alert.id for alert in alerts}
        assert set(by_response) == {in_session.response_id, outside.response_id}
        assert alert_session_numbers(session, alerts) == {by_response[in_session.response_id]: 1}
        ann = session.scalar(sa.select(Client)).clinician
        seen = view_client(session, ann, 1, actor="test", address=None)
        # the page's own responses carry their numbers already: nothing more is read for their alerts
        read: list[str] = []
        sa.event.listen(session.bind, "before_cursor_execute", lambda *args: read.append(args[2]))
        assert alert_session_numbers(session, seen.alerts, seen.responses) == {by_response[in_session.response_id]: 1}
        assert not [s for s in read if s.lstrip().upper().startswith("SELECT")]


def test_reads_of_client_data_are_audited_and_limited_to_the_clients_clinicians(db, engine, episode_id):
    _started, links = _start(db, engine, episode_id)
    submission = submit_by_token(db, engine, links[0][1], PHQ9_RISK)
    with db.begin() as session:
        ann = session.scalar(sa.select(Client)).clinician
        stranger = create_user(session, "sam", "Sam", "clinician", "a long test password", actor="test", address=None)
        caseload = view_caseload(session, ann, **WHO)
        assert [c.code for c in caseload.clients] == ["C-1"] and len(caseload.alerts) == 1
        assert caseload.pending == {1: 1} and 1 in caseload.last_answer
        seen = view_client(session, ann, 1, **WHO)
        assert seen.episode.id == episode_id and seen.next_session == 2
        assert [r.id for r, _score in seen.responses] == [submission.response_id] and seen.responses[0][1].band
        assert seen.responses[0][0].session_number == 1 and [care.number for care in seen.sessions] == [1]
        moments = {assignment_id: moment for assignment_id, _token, moment in links}
        # every questionnaire of the session, oldest first: the answered one, an end-of-session one held
        assert [(a.id, a.completed_at is not None, a.held) for a in seen.sessions[0].assignments] == [
            (a_id, a_id == links[0][0], a_id != links[0][0] and moments[a_id] == "end") for a_id in sorted(moments)
        ]
        care = view_care_session(session, ann, seen.sessions[0].id, **WHO)
        response, alerts = view_response(session, ann, submission.response_id, **WHO)
        assert care.number == 1 and response.id == submission.response_id and len(alerts) == 1
        for read in (
            lambda: view_client(session, stranger, 1, **WHO),
            lambda: view_response(session, stranger, submission.response_id, **WHO),
            lambda: visible_record(session, stranger, Alert, alerts[0].id),
            lambda: visible_record(session, ann, Alert, 99_999),
        ):
            with pytest.raises(NotFound):
                read()
        assert view_caseload(session, stranger, **WHO).clients == []
    actions = _actions(db)
    for action in ("caseload.view", "client.view", "session.view", "response.view"):
        assert action in actions
