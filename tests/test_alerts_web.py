"""Alerts on the caseload and the client page until a clinician acknowledges them with a note."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from staff_support import (
    ORS_ANSWERS,
    SRS_LOW,
    answer,
    audit_actions,
    links_on,
    make_world,
    page_token,
    release_latest,
    sign_in,
    start_session,
)

from core.models import Alert


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def ann(app, world):
    client = app.test_client()
    sign_in(client, "ann")
    links = links_on(start_session(client, world.episode_id, world.client_id).text)
    answer(app, links["ors"], ORS_ANSWERS)
    release_latest(app, client)
    answer(app, links["srs"], SRS_LOW)
    return client


# the alert's title comes from the SRS definition's flag label; its text gives the facts and the cutoff
TITLE = "SRS: Alliance concern: total below the cutoff (project convention)"
FACTS = "SRS 32.0 in session 1 (cutoff 36)"


def _alert(app) -> Alert:
    with app.extensions["rapportal"].sessions() as session:
        return session.scalar(sa.select(Alert).where(Alert.rule == "srs_alliance_concern"))


def test_srs_below_36_raises_an_alert_shown_on_caseload_and_client_page(app, ann, world):
    assert FACTS in _alert(app).message
    for page in (ann.get("/caseload").text, ann.get(f"/clients/{world.client_id}").text):
        assert TITLE in page and FACTS in page


def test_other_clinicians_do_not_see_the_alert(app, ann, world):
    bob = app.test_client()
    sign_in(bob, "bob")
    page = bob.get("/caseload")
    assert page.status_code == 200 and "C-2" in page.text  # bob's own caseload, shown
    assert TITLE not in page.text and FACTS not in page.text


def test_acknowledging_needs_a_note(app, ann, world):
    alert = _alert(app)
    token = page_token(ann, f"/clients/{world.client_id}")
    response = ann.post(f"/alerts/{alert.id}/acknowledge", data={"csrf_token": token, "note": ""})
    assert response.status_code == 422 and "Write a note" in response.text
    assert _alert(app).acknowledged_at is None


def test_acknowledging_needs_csrf(app, ann, world):
    alert = _alert(app)
    response = ann.post(f"/alerts/{alert.id}/acknowledge", data={"note": "talked about it"})
    assert response.status_code == 400
    assert _alert(app).acknowledged_at is None


def test_acknowledged_alert_leaves_the_lists_and_is_audited(app, ann, world):
    alert = _alert(app)
    token = page_token(ann, "/caseload")
    response = ann.post(
        f"/alerts/{alert.id}/acknowledge",
        data={"csrf_token": token, "note": "Discussed <the> rupture", "back": "caseload"},
    )
    assert response.status_code == 303 and response.location.endswith("/caseload")
    stored = _alert(app)
    assert stored.acknowledged_at is not None and stored.acknowledged_by == world.users["ann"]
    assert stored.note == "Discussed <the> rupture"
    assert TITLE not in ann.get("/caseload").text
    assert TITLE not in ann.get(f"/clients/{world.client_id}").text
    assert ("user:ann", "alert.acknowledge", f"client:{world.client_id}") in audit_actions(app)
    response_page = ann.get(f"/responses/{stored.response_id}").text
    assert "Discussed &lt;the&gt; rupture" in response_page


def test_another_clinician_cannot_acknowledge(app, ann, world):
    alert = _alert(app)
    bob = app.test_client()
    sign_in(bob, "bob")
    token = page_token(bob, "/caseload")
    response = bob.post(f"/alerts/{alert.id}/acknowledge", data={"csrf_token": token, "note": "mine now"})
    assert response.status_code == 404
    assert _alert(app).acknowledged_at is None


@pytest.mark.parametrize(
    ("severity", "shape", "word"),
    [("urgent", "<polygon", "Urgent"), ("warning", "<circle", "Warning"), ("info", 'rx="3"', "Information")],
)
def test_each_severity_badge_has_its_own_shape_and_word(app, severity, shape, word):
    from web.clinician import severity_badge

    with app.test_request_context("/"):
        badge = str(severity_badge(severity))
    assert badge.startswith(f'<span class="severity severity-{severity}"><svg class="severity-icon"')
    assert shape in badge and badge.endswith(f"</svg> {word}</span>")


def test_a_plugin_severity_is_drawn_as_information_and_escaped(app):
    from web.clinician import severity_badge

    with app.test_request_context("/"):
        badge = str(severity_badge('odd"<b>'))
    assert 'severity-odd&#34;&lt;b&gt;"' in badge and 'rx="3"' in badge and badge.endswith(" Information</span>")
    assert "<b>" not in badge
