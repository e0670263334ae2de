"""The administrator's client pages: they call core.clients, name the field at fault, and warn about unassigned clients."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from staff_support import csrf, make_world, sign_in

from core.models import AuditEntry, Client
from core.sites import create_site


@pytest.fixture
def admin(app):
    make_world(app)
    client = app.test_client()
    sign_in(client, "admin")
    return client


def test_a_client_without_a_main_clinician_is_listed_as_unseen(app, admin):
    page = admin.get("/admin/clients").text
    assert "no main clinician" not in page
    made = admin.post(
        "/admin/clients", data={"csrf_token": csrf(page), "code": "C-0", "language": "en", "clinician": ""}
    )
    assert made.status_code == 303
    page = admin.get("/admin/clients").text
    warning = page[page.index("no main clinician") : page.index("</div>", page.index("no main clinician"))]
    assert "C-0" in warning and "C-1" not in warning


def test_an_inactive_or_unknown_clinician_is_refused_on_the_field(app, admin):
    page = admin.get("/admin/clients").text
    refused = admin.post(
        "/admin/clients", data={"csrf_token": csrf(page), "code": "C-9", "language": "en", "clinician": "999"}
    )
    assert refused.status_code == 422 and "Not a valid choice" in refused.text
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(Client).where(Client.code == "C-9")) is None


def test_editing_a_client_is_audited_without_the_display_name(app, admin):
    path = "/admin/clients/1"
    page = admin.get(path).text
    data = {"csrf_token": csrf(page), "display_name": "Jo Private", "language": "es", "clinician": "4"}
    assert admin.post(path, data=data).status_code == 303
    with app.extensions["rapportal"].sessions() as session:
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "client.update"))
        assert entry.actor == "user:admin" and entry.target == "client:1"
        assert entry.detail == {"clinician": 4, "further": []}
        assert session.get(Client, 1).language == "es"


def test_moving_a_client_to_another_site_on_the_edit_page_is_audited(app, admin):
    with app.extensions["rapportal"].sessions.begin() as session:
        north = create_site(session, "North", actor="test", address=None)
        north_id = north.id
    path = "/admin/clients/1"
    page = admin.get(path).text
    assert "Main site" in page and "North" in page
    data = {"csrf_token": csrf(page), "language": "en", "clinician": "3", "site": str(north_id)}
    assert admin.post(path, data=data).status_code == 303
    with app.extensions["rapportal"].sessions() as session:
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "client.move"))
        assert entry.actor == "user:admin" and entry.target == "client:1"
        assert entry.detail == {"site_from": 1, "site_to": north_id}
        assert session.get(Client, 1).site_id == north_id
    refused = admin.post(path, data={**data, "site": "999"})
    assert refused.status_code == 422


def test_a_new_client_is_made_at_the_chosen_site(app, admin):
    with app.extensions["rapportal"].sessions.begin() as session:
        north_id = create_site(session, "North", actor="test", address=None).id
    page = admin.get("/admin/clients").text
    data = {"csrf_token": csrf(page), "code": "C-9", "language": "en", "clinician": "3", "site": str(north_id)}
    assert admin.post("/admin/clients", data=data).status_code == 303
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(Client.site_id).where(Client.code == "C-9")) == north_id
