"""Kiosk mode: one client's pending questionnaires in turn, then a neutral locked page."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from staff_support import ORS_ANSWERS, PASSWORD, SRS_LOW, csrf, make_world, page_token, sign_in, start_session

from core.models import Response, UserSession
from web.access import KIOSK_COOKIE


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def tablet(app, world):
    """A device where ann started session 1 and handed it over in kiosk mode."""
    device = app.test_client()
    sign_in(device, "ann")
    start_session(device, world.episode_id, world.client_id)
    token = page_token(device, "/sessions/1")
    response = device.post("/sessions/1/kiosk", data={"csrf_token": token})
    assert response.status_code == 302 and response.location.endswith("/kiosk")
    return device


def _send(device, answers):
    page = device.get("/kiosk")
    assignment = page.text.split('name="assignment" value="')[1].split('"')[0]
    return device.post("/kiosk", data={**answers, "csrf_token": csrf(page.text), "assignment": assignment})


def test_kiosk_signs_the_clinician_out_on_the_device(app, tablet):
    assert tablet.get("/caseload").status_code == 302
    assert tablet.get("/clients/1").status_code == 302
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(UserSession.end_reason).order_by(UserSession.id.desc())) == "kiosk"
    cookie = tablet.get_cookie(KIOSK_COOKIE)
    assert cookie is not None and cookie.http_only


def _release(device, password=PASSWORD):
    page = device.get("/kiosk")
    assert "Please hand the tablet back to your clinician." in page.text
    return device.post("/kiosk/release", data={"csrf_token": csrf(page.text), "password": password})


def test_kiosk_shows_the_questionnaires_in_turn_then_locks(app, tablet):
    first = tablet.get("/kiosk").text
    assert "Questionnaire 1 of 2" in first and 'name="ors_1"' in first
    assert _send(tablet, ORS_ANSWERS).status_code == 303
    assert _release(tablet).status_code == 303  # the clinician takes the tablet back for the SRS
    second = tablet.get("/kiosk").text
    assert "Questionnaire 2 of 2" in second and 'name="srs_1"' in second
    assert _send(tablet, SRS_LOW).status_code == 303
    locked = tablet.get("/kiosk")
    assert "This device is locked" in locked.text
    assert "C-1" not in locked.text and "Client One" not in locked.text and "questionnaire" not in locked.text.lower()
    assert tablet.get_cookie(KIOSK_COOKIE) is None
    with app.extensions["rapportal"].sessions() as session:
        assert sorted(session.scalars(sa.select(Response.instrument_id))) == ["ors", "srs"]


def test_kiosk_keeps_answers_and_names_the_missing_item(tablet):
    response = _send(tablet, {"ors_1": "4.0"})
    assert response.status_code == 422
    assert "Please answer this question." in response.text and 'value="4.0"' in response.text


def test_kiosk_refuses_a_forged_csrf_token(app, tablet):
    page = tablet.get("/kiosk").text
    assignment = page.split('name="assignment" value="')[1].split('"')[0]
    response = tablet.post("/kiosk", data={**ORS_ANSWERS, "csrf_token": "1.forged", "assignment": assignment})
    assert response.status_code == 400
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Response)) == 0
    assert 'name="ors_1"' in tablet.get("/kiosk").text  # the questionnaire is still open


def test_a_repeated_kiosk_submit_stores_one_response(app, tablet):
    page = tablet.get("/kiosk").text
    data = {
        **ORS_ANSWERS,
        "csrf_token": csrf(page),
        "assignment": page.split('name="assignment" value="')[1].split('"')[0],
    }
    tablet.post("/kiosk", data=data)
    tablet.post("/kiosk", data=data)
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Response)) == 1


def test_lock_button_ends_the_kiosk(tablet):
    token = csrf(tablet.get("/kiosk").text.split('class="kiosk-lock"')[1])
    assert tablet.post("/kiosk/lock", data={"csrf_token": token}).status_code == 303
    assert "This device is locked" in tablet.get("/kiosk").text


def test_without_the_kiosk_cookie_nothing_is_shown(app, tablet):
    stranger = app.test_client()
    page = stranger.get("/kiosk").text
    assert "This device is locked" in page and 'name="ors_1"' not in page
    assert stranger.post("/kiosk", data=ORS_ANSWERS).status_code == 403


def test_kiosk_refuses_answers_to_items_the_questionnaire_lacks(app, tablet):
    response = _send(tablet, {**ORS_ANSWERS, "ors_9": "5.0"})
    assert response.status_code == 422
    assert "not part of this questionnaire" in response.text
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Response)) == 0
