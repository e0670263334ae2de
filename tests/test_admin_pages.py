"""The administrator's plugins page (with the wording upload) and exports page."""

from __future__ import annotations

import io
import json

import pytest
from staff_support import audit_actions, make_world, page_token, sign_in, web_export

from core import Exporter, hookimpl
from core.instruments import placeholder_wording


@pytest.fixture
def admin(app):
    make_world(app)
    client = app.test_client()
    sign_in(client, "admin")
    return client


def _upload(admin, instrument, content: bytes):
    token = page_token(admin, "/admin/plugins")
    return admin.post(
        "/admin/plugins/wording",
        data={"csrf_token": token, "instrument": instrument, "wording": (io.BytesIO(content), "wording.json")},
        content_type="multipart/form-data",
    )


def test_plugins_page_lists_plugins_hooks_and_wording_needs(admin):
    page = admin.get("/admin/plugins").text
    assert "plugins.alert_rules" in page and "register_alert_rules" in page
    assert page.count("needs licensed wording") == 3  # wai-sr, srs, ors


def test_uploaded_wording_is_checked_installed_and_audited(app, admin):
    engine = app.extensions["rapportal"].engine
    wording = placeholder_wording(engine.instruments.get("srs"))
    wording["placeholder"] = False
    response = _upload(admin, "srs", json.dumps(wording).encode())
    assert response.status_code == 302
    assert engine.instruments.get("srs").sendable
    assert ("user:admin", "wording.install", "instrument:srs") in audit_actions(app)
    assert admin.get("/admin/plugins").text.count("needs licensed wording") == 2


@pytest.mark.parametrize(
    ("instrument", "content", "message"),
    [
        ("srs", b"{not json", "not valid JSON (line 1"),
        ("srs", b'{"instrument": "ors", "items": {}}', "is for &#39;ors&#39;, not &#39;srs&#39;"),
        ("srs", b"\xff\xfe", "not UTF-8"),
        ("phq9", b"{}", "Not a valid choice"),
    ],
)
def test_bad_wording_is_refused_with_a_clear_message(app, admin, instrument, content, message):
    response = _upload(admin, instrument, content)
    assert response.status_code == 422
    assert message in response.text
    assert not app.extensions["rapportal"].engine.instruments.get("srs").wording_installed


def test_wording_upload_without_a_file_names_the_field(admin):
    token = page_token(admin, "/admin/plugins")
    response = admin.post("/admin/plugins/wording", data={"csrf_token": token, "instrument": "srs"})
    assert response.status_code == 422 and "Choose the wording file" in response.text


def test_exports_page_downloads_an_audited_export(app, admin):
    page = admin.get("/admin/exports").text
    assert "csv" in page
    fmt = "csv" if 'value="csv"' in page else page.split('name="format"')[1].split('value="')[1].split('"')[0]
    response = web_export(app, admin, {"format": fmt})
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    response.get_data()
    actions = [(who, action) for who, action, _target in audit_actions(app)]
    for action in ("export.started", "export.finished", "export.downloaded"):
        assert ("user:admin", action) in actions


def test_export_dates_in_the_wrong_order_are_named(admin):
    token = page_token(admin, "/admin/exports")
    response = admin.post(
        "/admin/exports", data={"csrf_token": token, "format": "csv", "since": "2026-02-01", "until": "2026-01-01"}
    )
    assert response.status_code == 422 and "before the" in response.text


def test_export_with_an_unknown_format_is_refused(admin):
    token = page_token(admin, "/admin/exports")
    response = admin.post("/admin/exports", data={"csrf_token": token, "format": "nope"})
    assert response.status_code == 422 and "Not a valid choice" in response.text


class PipeExporter:
    """A third-party exporter, registered from outside the tree."""

    @hookimpl
    def register_exporters(self):
        def write(rows, stream, context):
            for row in rows:
                stream.write(f"{row.response_id}|{row.instrument}\n".encode())

        return [Exporter("acme-pipe", "ACME pipe-separated", "txt", "text/plain", write)]


def test_a_third_party_exporter_is_in_the_web_download_list_and_downloads(app_config, tmp_path, monkeypatch):
    from web import create_app

    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "pipe"))
    app = create_app({**app_config, "EXTRA_PLUGINS": [PipeExporter()]})
    make_world(app)
    admin = app.test_client()
    sign_in(admin, "admin")
    page = admin.get("/admin/exports").text
    assert "acme-pipe" in page and "ACME pipe-separated" in page
    response = web_export(app, admin, {"format": "acme-pipe"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert ".txt" in response.headers["Content-Disposition"]
    assert ("user:admin", "export.downloaded") in [(who, action) for who, action, _ in audit_actions(app)]
    app.extensions["rapportal"].db.dispose()
