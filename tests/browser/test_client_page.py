"""The client page, the caseload and the PDF report in headless Chromium at 390x844 and 1280x800, with axe.

The client has open alerts of every severity (tests/triage_support.py). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from staff_support import PASSWORD, make_world, sign_in
from triage_support import INFO_MESSAGE, deteriorating_client

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"  # as in conftest.py
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}


@pytest.fixture
def scene(app, licensed_wording, live_server, page):
    world = make_world(app)
    clinician = app.test_client()
    sign_in(clinician, "ann")
    triage = deteriorating_client(app, clinician, world.client_id)
    page.goto(f"{live_server}/login")
    page.fill("#username", "ann")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/caseload")
    return world, triage


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_the_client_page_answers_how_the_client_is_doing_first(scene, live_server, page, check_accessibility, size):
    world, _triage = scene
    page.set_viewport_size(VIEWPORTS[size])
    page.goto(f"{live_server}/clients/{world.client_id}")
    check_accessibility(page, f"client page ({size})")
    shoot(page, f"client-page-{size}")

    # the strip first, then the charts, then the alerts
    tops = [page.locator(sel).first.bounding_box()["y"] for sel in ("#status", ".chart-panel", "#client-alerts")]
    assert tops == sorted(tops)
    assert page.locator("#status .count-urgent strong").inner_text() == "2"
    assert page.locator("#status .count-info strong").inner_text() == "1"

    # the alerts: urgent first, with icon and words, the info alert last
    severities = page.locator(".alert-list .staff-alert").evaluate_all("els => els.map(e => e.dataset.severity)")
    assert severities[:2] == ["urgent", "urgent"] and severities[-1] == "info" and "warning" in severities
    first = page.locator(".alert-list .staff-alert").first
    assert "URGENT" in first.inner_text().upper() and first.locator("svg.severity-icon").count() == 1
    assert "item 9 answered 2" in first.inner_text() and "session 3" in first.inner_text()
    assert INFO_MESSAGE in page.locator(".alert-list").inner_text()

    # the chart for this width: the narrow one on a phone, its text about 11 px or more on screen
    shown = ".chart-narrow" if size == "phone" else ".chart-wide"
    chart = page.locator(f"#chart-srs-total{'-narrow' if size == 'phone' else ''}")
    assert chart.is_visible() and page.locator(shown).first.is_visible()
    smallest = chart.evaluate(
        "svg => Math.min(...[...svg.querySelectorAll('text')].map(t => t.getBoundingClientRect().height))"
    )
    assert smallest >= 10.5, smallest  # a 12-unit glyph box; 11-unit legend text stays above 10.5 px
    # no point marker lies over the cutoff label
    overlap = chart.evaluate(
        """svg => {
          const label = [...svg.querySelectorAll('text')].find(t => t.textContent.includes('36:'));
          const a = label.getBoundingClientRect();
          return [...svg.querySelectorAll('.chart-point circle, .chart-point rect, .chart-point polygon')].some(m => {
            const b = m.getBoundingClientRect();
            return b.left < a.right && a.left < b.right && b.top < a.bottom && a.top < b.bottom;
          });
        }"""
    )
    assert not overlap


def test_one_note_acknowledges_the_ticked_alerts(scene, live_server, page, check_accessibility):
    world, _triage = scene
    page.set_viewport_size(VIEWPORTS["phone"])
    page.goto(f"{live_server}/clients/{world.client_id}")
    before = page.locator(".alert-list .staff-alert").count()
    boxes = page.locator(".alert-list input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.fill("#ack-note", "Reviewed risk together; safety plan updated")
    page.click(".ack-many button[type=submit]")
    page.wait_for_load_state()
    assert page.locator(".alert-list .staff-alert").count() == before - 2
    assert page.locator("#status .count-urgent strong").inner_text() == "0"
    check_accessibility(page, "client page after acknowledging")


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_the_caseload_lists_the_most_urgent_client_first(app, scene, live_server, page, check_accessibility, size):
    from core.models import Client

    world, _triage = scene
    with app.extensions["rapportal"].sessions.begin() as session:
        session.add(Client(code="A-0-QUIET", clinician_id=world.users["ann"]))
    page.set_viewport_size(VIEWPORTS[size])
    page.goto(f"{live_server}/caseload")
    check_accessibility(page, f"caseload ({size})")
    shoot(page, f"caseload-{size}")
    order = page.locator("#caseload tbody tr").evaluate_all("rows => rows.map(r => r.dataset.client)")
    assert order == ["C-1", "A-0-QUIET"]  # C-1 has urgent alerts: before a code that sorts first
    assert "URGENT" in page.locator("#caseload tbody tr").first.inner_text().upper()


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_the_pdf_report_downloads_from_the_client_page(scene, live_server, page, size):
    world, _triage = scene
    page.set_viewport_size(VIEWPORTS[size])
    page.goto(f"{live_server}/clients/{world.client_id}")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the report (PDF)").click()
    saved = download.value
    assert saved.suggested_filename == "report-C-1.pdf"
    data = Path(saved.path()).read_bytes()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / f"client-report-{size}.pdf").write_bytes(data)
    text = " ".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
    assert "C-1" in text and "12.0" in text and "28.0" in text
