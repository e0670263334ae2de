"""The printable client report: a PDF made on the server, read back with pypdf, audited without clinical content."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from pypdf import PdfReader
from staff_support import make_world, page_token, sign_in
from triage_support import deteriorating_client

from core.models import Alert, AuditEntry

NOTE = "Safety plan agreed; crisis line card given"


@pytest.fixture
def world(app, licensed_wording):
    return make_world(app)


@pytest.fixture
def ann(app, world):
    client = app.test_client()
    sign_in(client, "ann")
    return client


@pytest.fixture
def report(app, ann, world):
    triage = deteriorating_client(app, ann, world.client_id)
    with app.extensions["rapportal"].sessions() as session:
        urgent = session.scalars(sa.select(Alert.id).where(Alert.severity == "urgent")).all()
    token = page_token(ann, f"/clients/{world.client_id}")
    ann.post(
        f"/clients/{world.client_id}/alerts/acknowledge", data={"csrf_token": token, "alert": urgent, "note": NOTE}
    )
    response = ann.get(f"/clients/{world.client_id}/report.pdf?episode={triage.episode_id}")
    return response


def _text(pdf: bytes) -> str:
    return " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(io.BytesIO(pdf)).pages)


def test_the_report_is_a_pdf_download(report):
    assert report.status_code == 200
    assert report.mimetype == "application/pdf" and report.data.startswith(b"%PDF-")
    assert report.headers["Content-Disposition"] == 'attachment; filename="report-C-1.pdf"'
    assert report.headers["Cache-Control"] == "no-store"


def test_the_report_holds_the_client_code_latest_scores_bands_and_alert_notes(report):
    text = _text(report.data)
    assert "C-1" in text
    assert "ORS" in text and "12.0" in text  # the latest ORS
    assert "SRS" in text and "28.0" in text  # the latest SRS
    assert "PHQ-9" in text and "Moderately severe" in text  # the latest PHQ-9 (16) with its band label
    assert NOTE in text  # the urgent alerts' note
    assert "item 9 answered 2" in text and "open" in text  # the warnings are still open


def test_making_the_report_is_audited_without_clinical_content(app, report, world):
    with app.extensions["rapportal"].sessions() as session:
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "client.report")).one()
    assert entry.actor == "user:ann" and entry.target == f"client:{world.client_id}"
    assert set(entry.detail) == {"episode"}


def test_another_clinician_gets_no_report(app, world, report):
    bob = app.test_client()
    sign_in(bob, "bob")
    assert bob.get(f"/clients/{world.client_id}/report.pdf").status_code == 404


def test_the_client_page_links_to_the_report(ann, world):
    page = ann.get(f"/clients/{world.client_id}").text
    assert f"/clients/{world.client_id}/report.pdf" in page
