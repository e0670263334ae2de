"""Starting, re-showing and cancelling sessions from the clinician's pages: one click, one session.

Reloading the links page, going Back/Forward and re-posting the form all used to make another,
undeletable session. Every state-changing POST now redirects, and the operation itself is idempotent.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from staff_support import ORS_ANSWERS, answer, audit_actions, csrf, links_on, make_world, release, sign_in

from core.models import Assignment, AuditEntry, CareSession


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def ann(app, world):
    client = app.test_client()
    sign_in(client, "ann")
    return client


def _sessions(app) -> int:
    with app.extensions["rapportal"].sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(CareSession))


def _start_form(ann, world):
    page = ann.get(f"/clients/{world.client_id}").text
    number = re.search(r'name="number" value="(\d+)"', page).group(1)
    return {"csrf_token": csrf(page), "number": number}


def test_starting_a_session_redirects_to_its_links_once(app, ann, world):
    posted = ann.post(f"/episodes/{world.episode_id}/sessions", data=_start_form(ann, world))
    assert posted.status_code == 303 and posted.location.endswith("/sessions/1/links")
    page = ann.get(posted.location)
    assert page.status_code == 200 and set(links_on(page.text)) == {"ors", "srs"}
    reloaded = ann.get(posted.location)
    assert reloaded.status_code == 302 and reloaded.location.endswith("/sessions/1")
    assert _sessions(app) == 1


def test_re_posting_the_start_form_makes_no_second_session(app, ann, world):
    form = _start_form(ann, world)  # the page as Back/Forward shows it again, with the same button
    first = ann.post(f"/episodes/{world.episode_id}/sessions", data=form)
    again = ann.post(f"/episodes/{world.episode_id}/sessions", data=form)
    assert first.status_code == again.status_code == 303
    assert again.location.endswith("/sessions/1?again=1")
    shown = ann.get(again.location).text
    assert "was started already" in shown and not links_on(shown)
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Assignment)) == 2
    assert _sessions(app) == 1
    assert [a for _actor, a, _t in audit_actions(app)].count("session.create") == 1


def test_the_client_page_then_offers_the_next_session(app, ann, world):
    ann.post(f"/episodes/{world.episode_id}/sessions", data=_start_form(ann, world))
    form = _start_form(ann, world)
    assert form["number"] == "2"
    assert ann.post(f"/episodes/{world.episode_id}/sessions", data=form).location.endswith("/sessions/2/links")
    assert _sessions(app) == 2


def test_a_session_number_from_the_future_is_refused(app, ann, world):
    form = _start_form(ann, world) | {"number": "3"}
    refused = ann.post(f"/episodes/{world.episode_id}/sessions", data=form)
    assert refused.status_code == 409 and "next session of this episode is session 1" in refused.text
    assert ann.post(f"/episodes/{world.episode_id}/sessions", data=form | {"number": "x"}).status_code == 422
    assert _sessions(app) == 0


def test_another_clinicians_episode_is_not_found(app, world):
    bob = app.test_client()
    sign_in(bob, "bob")
    page = bob.get(f"/clients/{world.other_client_id}").text
    form = {"csrf_token": csrf(page), "number": "1"}
    assert bob.post(f"/episodes/{world.episode_id}/sessions", data=form).status_code == 404
    assert _sessions(app) == 0


def test_an_empty_session_is_cancelled_from_its_page_and_audited(app, ann, world):
    links = links_on(
        ann.post(f"/episodes/{world.episode_id}/sessions", data=_start_form(ann, world), follow_redirects=True).text
    )
    page = ann.get("/sessions/1").text
    assert "Cancel this session" in page
    cancelled = ann.post("/sessions/1/cancel", data={"csrf_token": csrf(page)})
    assert cancelled.status_code == 303 and "cancelled=1" in cancelled.location
    assert "was cancelled" in ann.get(cancelled.location).text
    assert _sessions(app) == 0
    assert app.test_client().get(links["ors"]).status_code == 404  # its links stopped working
    with app.extensions["rapportal"].sessions() as session:
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "session.cancel"))
        assert entry.actor == "user:ann" and entry.target == f"client:{world.client_id}"
    assert _start_form(ann, world)["number"] == "1"


def test_a_session_with_an_answer_offers_no_cancel_and_refuses_one(app, ann, world):
    links = links_on(
        ann.post(f"/episodes/{world.episode_id}/sessions", data=_start_form(ann, world), follow_redirects=True).text
    )
    answer(app, links["ors"], ORS_ANSWERS)
    page = ann.get("/sessions/1").text
    assert "Cancel this session" not in page
    refused = ann.post("/sessions/1/cancel", data={"csrf_token": csrf(page)})
    assert refused.status_code == 409 and "has answers" in refused.text
    assert _sessions(app) == 1


def test_acknowledging_twice_changes_nothing_the_second_time(app, ann, world):
    links = links_on(
        ann.post(f"/episodes/{world.episode_id}/sessions", data=_start_form(ann, world), follow_redirects=True).text
    )
    release(ann, 1)
    answer(app, links["srs"], {"srs_1": "8.0", "srs_2": "8.0", "srs_3": "8.0", "srs_4": "8.0"})
    page = ann.get(f"/clients/{world.client_id}").text
    alert_id = re.search(r'name="alert" value="(\d+)"', page).group(1)  # its checkbox on the client page
    data = {"csrf_token": csrf(page), "note": "Talked it through"}
    assert ann.post(f"/alerts/{alert_id}/acknowledge", data=data).status_code == 303
    assert ann.post(f"/alerts/{alert_id}/acknowledge", data=data | {"note": "later"}).status_code == 303
    assert [a for _actor, a, _t in audit_actions(app)].count("alert.acknowledge") == 1


def test_a_link_can_be_ended_from_the_session_page_and_then_reissued(app, ann, world):
    links = links_on(
        ann.post(f"/episodes/{world.episode_id}/sessions", data=_start_form(ann, world), follow_redirects=True).text
    )
    with app.extensions["rapportal"].sessions() as session:
        ors_id = session.scalar(sa.select(Assignment.id).where(Assignment.instrument_id == "ors"))
    page = ann.get("/sessions/1").text
    ended = ann.post(f"/assignments/{ors_id}/expire", data={"csrf_token": csrf(page)})
    assert ended.status_code == 303 and ended.location.endswith("/sessions/1")
    assert app.test_client().get(links["ors"]).status_code == 410
    assert "link expired" in ann.get("/sessions/1").text
    assert "link.expire" in [a for _actor, a, _t in audit_actions(app)]
    reissued = ann.post(f"/assignments/{ors_id}/reissue", data={"csrf_token": csrf(page)}, follow_redirects=True)
    assert app.test_client().get(links_on(reissued.text)["ors"]).status_code == 200
