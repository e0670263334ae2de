"""The session flow (issue 11, items 1, 6 and 7): end-of-session measures wait for the clinician's release, the
kiosk hands back and re-authenticates, the client may see their own trend, and untranslated instruments are named.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from staff_support import (
    ORS_ANSWERS,
    PASSWORD,
    SRS_LOW,
    answer,
    audit_actions,
    csrf,
    links_on,
    make_world,
    page_token,
    release,
    sign_in,
    start_session,
)

from core.accounts import SignInLimits, SignInRefused, confirm_password, create_user
from core.accounts import sign_in as core_sign_in
from core.care import (
    held_assignments,
    kiosk_next,
    kiosk_waiting,
    own_progress,
    release_end_of_session,
    release_on_kiosk,
    start_care_session,
)
from core.clients import set_progress_shown
from core.errors import InvalidInput, NotAllowed, NotFound
from core.models import Assignment, AuditEntry, CareSession, Client, Episode, KioskSession, Response, User
from core.progress import Administration, own_trends
from core.responses import LinkError, is_held, submit_by_token
from core.sites import set_supervised
from web.access import KIOSK_COOKIE

ORS_HIGH = {"ors_1": "7.0", "ors_2": "7.0", "ors_3": "6.5", "ors_4": "6.5"}  # total 27.0


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def state(app):
    return app.extensions["rapportal"]


@pytest.fixture
def ann(app, world):
    device = app.test_client()
    sign_in(device, "ann")
    return device


def _user(session, name: str) -> User:
    return session.scalar(sa.select(User).where(User.username == name))


def _started(state, world, number: int = 1):
    """Session ``number`` of C-1's PCOMS episode, started in core: (care session id, {instrument: token})."""
    with state.sessions.begin() as session:
        episode = session.get(Episode, world.episode_id)
        started = start_care_session(session, state.engine, episode, number=number, actor="test", address=None)
        return started.care.id, {link.assignment.instrument_id: link.token for link in started.links}


def _limits(**changes) -> SignInLimits:
    settings = {
        "LOGIN_FREE_FAILURES": 5,
        "LOGIN_MAX_WAIT_SECONDS": 900,
        "LOGIN_ACCOUNT_FREE_FAILURES": 20,
        "LOGIN_ACCOUNT_MAX_WAIT_SECONDS": 5,
        "LOGIN_ADDRESS_FREE_FAILURES": 100,
        "LOGIN_ADDRESS_MAX_WAIT_SECONDS": 60,
        "LOGIN_FORGET_SECONDS": 3600,
    } | changes
    return SignInLimits.from_settings(settings)


# -- item 1 in core: held until released --------------------------------------------------------------------


def test_end_of_session_measures_are_held_until_the_clinician_releases_them(state, world):
    care_id, _tokens = _started(state, world)
    with state.sessions.begin() as session:
        care = session.get(CareSession, care_id)
        held = {a.instrument_id: is_held(a) for a in care.assignments}
        assert held == {"ors": False, "srs": True}
        assert [a.instrument_id for a in held_assignments(care)] == ["srs"]
        assert release_end_of_session(session, _user(session, "ann"), care, actor="user:ann", address="10.0.0.1")
        assert not any(is_held(a) for a in care.assignments) and held_assignments(care) == []
        assert not release_end_of_session(session, _user(session, "ann"), care, actor="user:ann", address=None)
    releases = [entry for entry in audit_actions_rows(state) if entry.action == "session.release"]
    assert len(releases) == 1 and releases[0].actor == "user:ann" and releases[0].target == f"client:{world.client_id}"
    assert set(releases[0].detail) == {"care_session", "assignments"}


def audit_actions_rows(state) -> list[AuditEntry]:
    with state.sessions() as session:
        return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def test_only_the_clients_clinicians_may_release(state, world):
    care_id, _tokens = _started(state, world)
    with state.sessions.begin() as session:
        create_user(session, "sue", "Sue", "supervisor", PASSWORD, actor="test", address=None)
    with state.sessions.begin() as session:
        set_supervised(session, _user(session, "sue"), [world.users["ann"]], actor="test", address=None)
    with state.sessions() as session:
        care = session.get(CareSession, care_id)
        with pytest.raises(NotFound):
            release_end_of_session(session, _user(session, "bob"), care, actor="user:bob", address=None)
        with pytest.raises(NotAllowed):
            release_end_of_session(session, _user(session, "sue"), care, actor="user:sue", address=None)
        assert care.end_released_at is None


def test_a_held_link_stores_nothing_until_released(state, world):
    care_id, tokens = _started(state, world)
    with pytest.raises(LinkError) as refused:
        submit_by_token(state.sessions, state.engine, tokens["srs"], {k: float(v) for k, v in SRS_LOW.items()})
    assert refused.value.reason == "held"
    with state.sessions.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Response)) == 0
        release_end_of_session(
            session, _user(session, "ann"), session.get(CareSession, care_id), actor="user:ann", address=None
        )
    stored = submit_by_token(state.sessions, state.engine, tokens["srs"], {k: float(v) for k, v in SRS_LOW.items()})
    assert stored.created


def test_a_plan_with_start_measures_only_holds_nothing(state, world):
    with state.sessions.begin() as session:
        episode = session.get(Episode, world.episode_id)
        episode.plan = [{"instrument": "ors", "moment": "start", "every": 1, "first": 1}]
    care_id, _tokens = _started(state, world)
    with state.sessions() as session:
        assert held_assignments(session.get(CareSession, care_id)) == []


# -- item 1 in core: the kiosk's re-authentication ------------------------------------------------------------


def _kiosk(state, world, care_id: int) -> int:
    with state.sessions.begin() as session:
        care = session.get(CareSession, care_id)
        kiosk = KioskSession(
            token_hash="k" * 64,
            client_id=world.client_id,
            created_by=world.users["ann"],
            assignment_ids=[a.id for a in care.assignments],
            expires_at=care.held_at.replace(year=care.held_at.year + 1),
        )
        session.add(kiosk)
        session.flush()
        return kiosk.id


def test_the_kiosk_waits_for_the_clinicians_password_then_shows_the_end_measures(state, world):
    care_id, _tokens = _started(state, world)
    kiosk_id = _kiosk(state, world, care_id)
    with state.sessions.begin() as session:
        kiosk = session.get(KioskSession, kiosk_id)
        assert kiosk_next(session, kiosk).instrument_id == "ors"
        ors = kiosk_next(session, kiosk)
        ors.completed_at = ors.created_at  # answered
        session.flush()
        assert kiosk_next(session, kiosk) is None
        assert [care.id for care in kiosk_waiting(session, kiosk)] == [care_id]
        with pytest.raises(SignInRefused) as refused:
            release_on_kiosk(session, kiosk, "not the password", limits=_limits(), address="10.0.0.9")
        assert refused.value.reason == "credentials"
    with state.sessions.begin() as session:
        kiosk = session.get(KioskSession, kiosk_id)
        assert kiosk_next(session, kiosk) is None  # a wrong password released nothing
        assert release_on_kiosk(session, kiosk, PASSWORD, limits=_limits(), address="10.0.0.9") == 1
        assert kiosk_next(session, kiosk).instrument_id == "srs" and kiosk_waiting(session, kiosk) == []
    actions = [(e.actor, e.action) for e in audit_actions_rows(state)]
    assert (f"kiosk:{kiosk_id}", "reauth.failure") in actions and ("user:ann", "session.release") in actions
    assert not any(action == "login.success" for _actor, action in actions)  # no sign-in session was started


def test_the_re_authentication_is_throttled_with_the_sign_in_counters(state, world):
    limits = _limits(LOGIN_FREE_FAILURES=2, LOGIN_MAX_WAIT_SECONDS=60)
    with state.sessions.begin() as session:
        ann = _user(session, "ann")
        for _ in range(3):
            with pytest.raises(SignInRefused):
                confirm_password(session, ann, "wrong", "10.0.0.7", limits=limits, actor="kiosk:1")
        with pytest.raises(SignInRefused) as refused:  # now even the right password waits
            confirm_password(session, ann, PASSWORD, "10.0.0.7", limits=limits, actor="kiosk:1")
        assert refused.value.reason == "throttled" and refused.value.retry_after > 0
        with pytest.raises(SignInRefused) as at_sign_in:  # the same counters as the sign-in page
            core_sign_in(session, "ann", PASSWORD, "10.0.0.7", limits=limits)
        assert at_sign_in.value.reason == "throttled"
    assert "reauth.throttled" in [e.action for e in audit_actions_rows(state)]


# -- item 1 on the web ----------------------------------------------------------------------------------------


def test_a_held_link_tells_the_client_it_comes_at_the_end_and_refuses_answers(app, ann, world):
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    client = app.test_client()
    page = client.get(links["srs"])
    assert page.status_code == 200
    assert "This questionnaire comes at the end of the session" in page.text and 'name="srs_1"' not in page.text
    refused = client.post(links["srs"], data={**SRS_LOW, "csrf_token": "whatever"})
    assert refused.status_code == 409 and "comes at the end of the session" in refused.text
    assert answer(app, links["ors"], ORS_ANSWERS).status_code == 200  # the start measure opens at once
    release(ann, 1)
    assert answer(app, links["srs"], SRS_LOW).status_code == 200
    with app.extensions["rapportal"].sessions() as session:
        assert sorted(session.scalars(sa.select(Response.instrument_id))) == ["ors", "srs"]


def test_the_session_page_offers_the_release_until_it_is_done(app, ann, world):
    page = start_session(ann, world.episode_id, world.client_id)
    assert "This link opens when you release the end-of-session questionnaires" in page.text
    session_page = ann.get("/sessions/1").text
    assert "Release end-of-session measures" in session_page and "held until you release it" in session_page
    released = ann.post("/sessions/1/release", data={"csrf_token": csrf(session_page)}, follow_redirects=True)
    assert "The end-of-session questionnaires are released" in released.text
    assert "Release end-of-session measures" not in released.text and "held until you release it" not in released.text
    assert [a for _actor, a, _target in audit_actions(app)].count("session.release") == 1


def test_the_client_page_lists_a_held_measure_as_held(app, ann, world):
    start_session(ann, world.episode_id, world.client_id)
    page = ann.get(f"/clients/{world.client_id}").text
    assert "ORS: waiting" in page and "SRS: held until you release it" in page
    release(ann, 1)
    assert "SRS: waiting" in ann.get(f"/clients/{world.client_id}").text


def test_release_needs_the_csrf_token_and_the_clients_clinician(app, ann, world):
    start_session(ann, world.episode_id, world.client_id)
    assert ann.post("/sessions/1/release", data={"csrf_token": "1.forged"}).status_code == 400
    bob = app.test_client()
    sign_in(bob, "bob")
    assert bob.post("/sessions/1/release", data={"csrf_token": page_token(bob, "/caseload")}).status_code == 404
    with app.extensions["rapportal"].sessions() as session:
        assert session.get(CareSession, 1).end_released_at is None


@pytest.fixture
def tablet(app, ann, world):
    start_session(ann, world.episode_id, world.client_id)
    response = ann.post("/sessions/1/kiosk", data={"csrf_token": page_token(ann, "/sessions/1")})
    assert response.status_code == 302
    return ann


def _kiosk_send(device, answers):
    page = device.get("/kiosk").text
    assignment = re.search(r'name="assignment" value="(\d+)"', page).group(1)
    return device.post("/kiosk", data={**answers, "csrf_token": csrf(page), "assignment": assignment})


def test_the_kiosk_hands_back_after_the_start_measures_and_reaches_nothing_else(app, tablet):
    assert _kiosk_send(tablet, ORS_ANSWERS).status_code == 303
    page = tablet.get("/kiosk")
    assert "Please hand the tablet back to your clinician." in page.text
    assert 'name="srs_1"' not in page.text and "C-1" not in page.text and "Client One" not in page.text
    assert 'name="password"' in page.text and 'autocomplete="off"' in page.text
    assert tablet.get("/caseload").status_code == 302 and tablet.get("/sessions/1").status_code == 302
    assert tablet.post("/kiosk", data={**SRS_LOW, "csrf_token": csrf(page.text)}).status_code == 303  # ignored
    with app.extensions["rapportal"].sessions() as session:
        assert list(session.scalars(sa.select(Response.instrument_id))) == ["ors"]


def test_a_wrong_kiosk_password_is_refused_and_the_kiosk_keeps_waiting(app, tablet):
    _kiosk_send(tablet, ORS_ANSWERS)
    token = csrf(tablet.get("/kiosk").text)
    refused = tablet.post("/kiosk/release", data={"csrf_token": token, "password": "not it"})
    assert refused.status_code == 401 and "This password is not right." in refused.text
    assert tablet.post("/kiosk/release", data={"csrf_token": token, "password": ""}).status_code == 422
    assert tablet.post("/kiosk/release", data={"csrf_token": "1.forged", "password": PASSWORD}).status_code == 400
    assert "Please hand the tablet back" in tablet.get("/kiosk").text


def test_kiosk_re_authentication_is_throttled_like_sign_in(app, tablet):
    app.config.update(LOGIN_FREE_FAILURES=1, LOGIN_MAX_WAIT_SECONDS=60)
    _kiosk_send(tablet, ORS_ANSWERS)
    token = csrf(tablet.get("/kiosk").text)
    statuses = [tablet.post("/kiosk/release", data={"csrf_token": token, "password": "guess"}).status_code for _ in
                range(2)]  # fmt: skip
    assert statuses == [401, 401]
    throttled = tablet.post("/kiosk/release", data={"csrf_token": token, "password": PASSWORD})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert "Too many attempts" in throttled.text
    assert 'name="srs_1"' not in tablet.get("/kiosk").text


def test_the_kiosk_flow_ors_release_srs_then_locks(app, tablet):
    _kiosk_send(tablet, ORS_ANSWERS)
    token = csrf(tablet.get("/kiosk").text)
    assert tablet.post("/kiosk/release", data={"csrf_token": token, "password": PASSWORD}).status_code == 303
    page = tablet.get("/kiosk").text
    assert "Questionnaire 2 of 2" in page and 'name="srs_1"' in page
    assert tablet.get("/caseload").status_code == 302  # the re-authentication signed nobody in
    assert _kiosk_send(tablet, SRS_LOW).status_code == 303
    assert "This device is locked" in tablet.get("/kiosk").text and tablet.get_cookie(KIOSK_COOKIE) is None
    actions = [a for _actor, a, _target in audit_actions(app)]
    assert actions.count("session.release") == 1 and actions.count("kiosk.lock") == 1


def test_a_release_from_the_session_page_also_opens_the_kiosk(app, world):
    desk, tablet = app.test_client(), app.test_client()
    sign_in(desk, "ann")
    sign_in(tablet, "ann")
    start_session(tablet, world.episode_id, world.client_id)
    tablet.post("/sessions/1/kiosk", data={"csrf_token": page_token(tablet, "/sessions/1")})
    _kiosk_send(tablet, ORS_ANSWERS)
    release(desk, 1)
    assert 'name="srs_1"' in tablet.get("/kiosk").text


# -- item 6: progress for the client ---------------------------------------------------------------------------


def _administrations(values, start=1):
    return [
        Administration(response_id=n, version="1", scores={"total": Decimal(v)}, session_number=n)
        for n, v in enumerate(values, start=start)
    ]


def test_own_trends_cover_outcome_scores_with_a_direction_and_leave_session_ratings_out(engine):
    ors = own_trends(engine.instruments.get("ors"), _administrations(["18.5", "22.0", "27.0"]))
    assert len(ors) == 1
    assert ors[0].title == "ORS" and ors[0].direction == "higher_is_better"
    assert ors[0].values == ((1, Decimal("18.5")), (2, Decimal("22.0")), (3, Decimal("27.0")))
    assert ors[0].since_first == Decimal("8.5")
    assert own_trends(engine.instruments.get("srs"), _administrations(["32.0", "38.0"])) == ()
    phq9 = own_trends(engine.instruments.get("phq9"), _administrations(["15"]))
    assert phq9[0].direction == "lower_is_better" and phq9[0].since_first is None


def test_progress_is_off_by_default_and_only_a_clinician_turns_it_on(state, world):
    with state.sessions.begin() as session:
        assert session.get(Client, world.client_id).show_progress is False
        with pytest.raises(NotFound):
            set_progress_shown(session, _user(session, "bob"), world.client_id, True, actor="user:bob", address=None)
        with pytest.raises(InvalidInput) as refused:
            set_progress_shown(session, _user(session, "ann"), world.client_id, "yes", actor="user:ann", address=None)
        assert refused.value.field == "show_progress"
        set_progress_shown(session, _user(session, "ann"), world.client_id, True, actor="user:ann", address=None)
        set_progress_shown(session, _user(session, "ann"), world.client_id, True, actor="user:ann", address=None)
    entries = [e for e in audit_actions_rows(state) if e.action == "client.progress"]
    assert len(entries) == 1 and entries[0].detail == {"shown": True} and entries[0].actor == "user:ann"


def test_own_progress_shows_only_this_clients_outcome_scores_of_the_episode(state, world):
    care_id, tokens = _started(state, world)
    submit_by_token(state.sessions, state.engine, tokens["ors"], {k: float(v) for k, v in ORS_ANSWERS.items()})
    with state.sessions() as session:
        assignment = session.scalar(sa.select(Assignment).where(Assignment.instrument_id == "ors"))
        assert own_progress(session, state.engine, assignment, actor="client-link", address=None) == []
    with state.sessions.begin() as session:
        set_progress_shown(session, _user(session, "ann"), world.client_id, True, actor="user:ann", address=None)
        release_end_of_session(
            session, _user(session, "ann"), session.get(CareSession, care_id), actor="user:ann", address=None
        )
    submit_by_token(state.sessions, state.engine, tokens["srs"], {k: float(v) for k, v in SRS_LOW.items()})
    with state.sessions.begin() as session:
        assignment = session.scalar(sa.select(Assignment).where(Assignment.instrument_id == "srs"))
        trends = own_progress(session, state.engine, assignment, actor="client-link", address=None)
    assert [(t.instrument, t.values) for t in trends] == [("ors", ((1, Decimal("18.5")),))]
    assert [e.action for e in audit_actions_rows(state)].count("progress.view") == 1


def test_an_old_link_shows_no_progress_and_never_later_answers(state, world):
    _care_id, first = _started(state, world)
    submit_by_token(state.sessions, state.engine, first["ors"], {k: float(v) for k, v in ORS_ANSWERS.items()})
    with state.sessions.begin() as session:
        set_progress_shown(session, _user(session, "ann"), world.client_id, True, actor="user:ann", address=None)
    _care_id, second = _started(state, world, number=2)
    submit_by_token(state.sessions, state.engine, second["ors"], {k: float(v) for k, v in ORS_HIGH.items()})
    with state.sessions.begin() as session:
        older = session.scalar(sa.select(Assignment).where(Assignment.instrument_id == "ors").order_by(Assignment.id))
        trends = own_progress(session, state.engine, older, actor="client-link", address=None)
        assert [t.values for t in trends] == [((1, Decimal("18.5")),)]  # session 2 came later: not shown here
        older.expires_at = older.created_at
        assert own_progress(session, state.engine, older, actor="client-link", address=None) == []


def test_the_done_page_shows_the_clients_trend_in_plain_words_when_turned_on(app, ann, world):
    first = links_on(start_session(ann, world.episode_id, world.client_id).text)
    done = answer(app, first["ors"], ORS_ANSWERS)
    assert done.status_code == 200 and "Your progress" not in done.text  # off by default
    client_page = ann.get(f"/clients/{world.client_id}").text
    assert "Show the client their progress" in client_page
    token = csrf(client_page.split('id="own-progress"')[1])
    assert ann.post(f"/clients/{world.client_id}/progress", data={"csrf_token": token, "show": "on"}).status_code == 303
    assert '<option selected value="on">' in ann.get(f"/clients/{world.client_id}").text
    release(ann, 1)
    second = links_on(start_session(ann, world.episode_id, world.client_id).text)
    done = answer(app, second["ors"], ORS_HIGH)
    text = re.sub(r"\s+", " ", done.text)
    assert "Your progress" in text and "Your ORS over time" in text
    assert "Session 1: <strong>18.5</strong>" in text and "Session 2: <strong>27</strong>" in text
    assert "Your ORS score has gone up by 8.5 since the first time, from 18.5 to 27." in text
    assert "a higher score means you are doing better" in text
    assert "SRS" not in text and "alert" not in text.lower() and "C-1" not in text


def test_the_progress_setting_refuses_a_bad_choice_and_strangers(app, ann, world):
    token = csrf(ann.get(f"/clients/{world.client_id}").text.split('id="own-progress"')[1])
    refused = ann.post(f"/clients/{world.client_id}/progress", data={"csrf_token": token, "show": "maybe"})
    assert refused.status_code == 422 and "show" in refused.text
    bob = app.test_client()
    sign_in(bob, "bob")
    data = {"csrf_token": page_token(bob, "/caseload"), "show": "on"}
    assert bob.post(f"/clients/{world.client_id}/progress", data=data).status_code == 404


# -- item 7: languages ------------------------------------------------------------------------------------------


def test_instruments_know_which_languages_they_are_translated_into(engine):
    phq9 = engine.instruments.get("phq9")
    assert phq9.translated_into(phq9.language) and not phq9.translated_into("de")


def _german(app, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        session.get(Client, world.client_id).language = "de"


def test_links_and_session_pages_name_the_instruments_a_german_client_sees_in_english(app, ann, world):
    _german(app, world)
    links_page = re.sub(r"\s+", " ", start_session(ann, world.episode_id, world.client_id).text)
    note = "ORS and SRS have no German translation; the client will see them in English."
    assert note in links_page
    assert note in re.sub(r"\s+", " ", ann.get("/sessions/1").text)


def test_an_english_client_gets_no_language_note(ann, world):
    assert "translation" not in start_session(ann, world.episode_id, world.client_id).text


def test_the_client_form_says_which_instruments_lack_a_translation(app, world):
    admin = app.test_client()
    sign_in(admin, "admin")
    for path in ("/admin/clients", f"/admin/clients/{world.client_id}"):
        page = re.sub(r"\s+", " ", admin.get(path).text)
        assert "PHQ-9" in page and "have no German translation; the client will see them in English." in page
        assert "have no Spanish translation" in page


def test_language_notes_are_translated_on_a_german_page(app, ann, world):
    _german(app, world)
    ann.environ_base["HTTP_ACCEPT_LANGUAGE"] = "de"
    page = re.sub(r"\s+", " ", start_session(ann, world.episode_id, world.client_id).text)
    assert "ORS und SRS" in page and "Englisch" in page
