"""Bad input found by review: each gets a clear 4xx naming the problem, never a 500 or a redirect off-site."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from staff_support import make_world, page_token, release_latest, sign_in

from core.models import Alert


@pytest.fixture
def world(app):
    return make_world(app)


@pytest.fixture
def admin(app, world):
    client = app.test_client()
    sign_in(client, "admin")
    return client


@pytest.mark.parametrize(
    "target", ["/%09/evil.example", "/%0a/evil.example", "/%0d/evil.example", "//evil.example", "/\\evil.example"]
)
def test_sign_in_never_redirects_to_another_site(app, world, target):
    from staff_support import PASSWORD

    client = app.test_client()
    page = client.get(f"/login?next={target}")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(f"/login?next={target}", data={"csrf_token": token, "username": "ann", "password": PASSWORD})
    assert response.status_code == 302
    assert not response.location.lstrip().startswith("//") and "evil.example" not in response.location


def test_sign_in_returns_to_a_local_page(app, world):
    from staff_support import PASSWORD

    client = app.test_client()
    token = client.get("/login?next=/caseload").text.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post("/login?next=/caseload", data={"csrf_token": token, "username": "ann", "password": PASSWORD})
    assert response.location.endswith("/caseload")


@pytest.mark.parametrize("path", ["/clients/99999999999999999999999", "/sessions/2147483648", "/responses/9" * 3])
def test_ids_too_large_for_the_database_are_not_found(app, world, path):
    client = app.test_client()
    sign_in(client, "ann")
    assert client.get(path).status_code == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=99999999999999999999999", "page: must be at most"),
        ("until=9999-12-31", "until: use a date up to 9998-12-31."),
    ],
)
def test_audit_filters_out_of_range_are_named(admin, query, message):
    response = admin.get(f"/admin/audit?{query}")
    assert response.status_code == 422
    assert message in response.text


def test_export_dates_out_of_range_are_named(admin):
    token = page_token(admin, "/admin/exports")
    response = admin.post("/admin/exports", data={"csrf_token": token, "format": "csv", "until": "9999-12-31"})
    assert response.status_code == 422
    assert "Use a date up to 9998-12-31." in response.text


def test_a_deeply_nested_wording_upload_is_refused(admin):
    token = page_token(admin, "/admin/plugins")
    response = admin.post(
        "/admin/plugins/wording",
        data={"csrf_token": token, "instrument": "srs", "wording": (io.BytesIO(b"[" * 100_000), "w.json")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert "nested too deeply" in response.text


def test_a_non_ascii_setup_token_is_not_found(app):
    assert app.test_client().get("/setup/%C3%A9").status_code == 404


@pytest.mark.parametrize(
    ("path", "data", "kind"),
    [
        ("/login", {"username": "a\x00b", "password": "x"}, "application/x-www-form-urlencoded"),
        ("/login", {"username": "a\x00b", "password": "x"}, "multipart/form-data"),
        ("/admin/audit?actor=a%00b", None, None),
    ],
)
def test_a_nul_character_is_refused_naming_the_field(app, world, path, data, kind):
    client = app.test_client()
    response = client.post(path, data=data, content_type=kind) if data else client.get(path)
    assert response.status_code == 400
    assert "contains a NUL character" in response.text


def test_an_alert_cannot_be_acknowledged_with_a_blank_note(app, world, licensed_wording):
    from staff_support import ORS_ANSWERS, SRS_LOW, answer, links_on, start_session

    ann = app.test_client()
    sign_in(ann, "ann")
    links = links_on(start_session(ann, world.episode_id, world.client_id).text)
    answer(app, links["ors"], ORS_ANSWERS)
    release_latest(app, ann)
    answer(app, links["srs"], SRS_LOW)
    with app.extensions["rapportal"].sessions() as session:
        alert_id = session.scalar(sa.select(Alert.id))
    token = page_token(ann, f"/clients/{world.client_id}")
    response = ann.post(f"/alerts/{alert_id}/acknowledge", data={"csrf_token": token, "note": "   "})
    assert response.status_code == 422
    with app.extensions["rapportal"].sessions() as session:
        assert session.get(Alert, alert_id).acknowledged_at is None


def test_a_failed_sign_in_with_an_unknown_name_keeps_the_name_out_of_the_audit_trail(app, world):
    from core.models import AuditEntry

    client = app.test_client()
    token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    client.post("/login", data={"csrf_token": token, "username": "MySecretPassw0rd", "password": "x"})
    client.post("/login", data={"csrf_token": token, "username": "ann", "password": "wrong"})
    with app.extensions["rapportal"].sessions() as session:
        names = [
            e.detail["username"]
            for e in session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "login.failure"))
        ]
    assert names == ["(no such account)", "ann"]


def test_viewing_the_caseload_is_audited(app, world):
    from staff_support import audit_actions

    ann = app.test_client()
    sign_in(ann, "ann")
    ann.get("/caseload")
    assert ("user:ann", "caseload.view", None) in audit_actions(app)
