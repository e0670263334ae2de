"""The newcomer path of the README in headless Chromium, with axe checks and screenshots.

Start, create the first administrator through the setup link, install wording on the plugins
page, add a clinician and a client, create a session as the clinician, answer the ORS and the
SRS through their links, and see both points on the client's chart with the SRS alert.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from core.instruments import placeholder_wording

pytestmark = pytest.mark.browser

ADMIN_PASSWORD = "first admin password"
CLINICIAN_PASSWORD = "clinician password 1"


def mark_line(page: Any, item_id: str, value: float) -> None:
    line = page.locator(f"#item-{item_id} .vas-line")
    line.scroll_into_view_if_needed()
    box = line.bounding_box()
    page.mouse.click(box["x"] + box["width"] * value / 10, box["y"] + box["height"] / 2)


def sign_in(page: Any, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_newcomer_path(app, runner, live_server, page, browser, tmp_path: Path, check_accessibility, screenshot):
    base = live_server
    page.goto(base + "/")
    assert page.url.endswith("/setup")
    check_accessibility(page, "first-start page")

    # The serve command prints this link; `rapportal setup-link` prints it again.
    printed = runner.invoke(args=["setup-link", "--base-url", base]).output
    setup_link = re.search(r"(http://\S+/setup/\S+)", printed).group(1)
    page.goto(setup_link)
    check_accessibility(page, "setup page")
    screenshot(page, "staff-setup")
    page.fill("#username", "boss")
    page.fill("#display_name", "Clinic Boss")
    page.fill("#password", ADMIN_PASSWORD)
    page.fill("#confirm", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    assert page.url.endswith("/admin/users")

    # Licensed wording (placeholder text standing in for a clinic's licensed file) on the plugins page.
    engine = app.extensions["rapportal"].engine
    page.goto(f"{base}/admin/plugins")
    check_accessibility(page, "plugins page")
    screenshot(page, "staff-plugins")
    for instrument_id in ("ors", "srs"):
        wording = placeholder_wording(engine.instruments.get(instrument_id))
        wording["placeholder"] = False
        path = tmp_path / f"{instrument_id}.json"
        path.write_text(json.dumps(wording), encoding="utf-8")
        page.goto(f"{base}/admin/plugins")
        page.select_option("#instrument", instrument_id)
        page.set_input_files("#wording", str(path))
        page.click("text=Install wording")
        assert f"Wording for {instrument_id} installed." in page.inner_text("main")

    # A clinician and a client.
    page.goto(f"{base}/admin/users")
    page.fill("#username", "ann")
    page.fill("#display_name", "Ann Clinician")
    page.select_option("#role", "clinician")
    page.fill("#password", CLINICIAN_PASSWORD)
    page.click("text=Add account")
    assert "Account ann created." in page.inner_text("main")
    check_accessibility(page, "users page")
    screenshot(page, "staff-users")
    page.goto(f"{base}/admin/clients")
    page.fill("#code", "C-0042")
    page.select_option("#clinician", label="Ann Clinician (ann)")
    page.click("text=Add client")
    assert "Client C-0042 added." in page.inner_text("main")
    check_accessibility(page, "clients page")
    page.click("text=Sign out")

    # The clinician creates a session.
    sign_in(page, base, "ann", CLINICIAN_PASSWORD)
    assert page.url.endswith("/caseload")
    check_accessibility(page, "caseload")
    page.click("text=C-0042")
    page.click("text=Start episode")  # PCOMS is the default plan
    page.click("text=Start session 1 and make its links")
    check_accessibility(page, "links page")
    screenshot(page, "staff-links")
    links = {
        page.get_attribute(f"#{element_id}", "data-link"): page.input_value(f"#{element_id}")
        for element_id in page.eval_on_selector_all("input.link-url", "els => els.map(e => e.id)")
    }
    assert set(links) == {"ors", "srs"}
    assert page.locator("img.qr").count() == 2

    # The client answers both on their own device.
    device = browser.new_context(viewport={"width": 360, "height": 740})
    phone = device.new_page()
    phone.goto(links["ors"])
    for n in range(1, 5):
        mark_line(phone, f"ors_{n}", 4.5)
    phone.click("[data-submit]")
    phone.wait_for_selector(".receipt")
    phone.goto(links["srs"])  # the SRS comes at the end of the session: it waits for the clinician
    assert "This questionnaire comes at the end of the session" in phone.inner_text("main")
    page.get_by_role("link", name="Session page", exact=True).click()
    page.click("text=Release end-of-session measures")
    assert "The end-of-session questionnaires are released" in page.inner_text("main")
    phone.goto(links["srs"])
    for n in range(1, 5):
        mark_line(phone, f"srs_{n}", 8.0)
    phone.click("[data-submit]")
    phone.wait_for_selector(".receipt")
    device.close()

    # Both points on the client's chart, and the SRS alert.
    page.goto(f"{base}/caseload")
    assert "SRS: Alliance concern" in page.inner_text("main")
    page.click("text=C-0042 >> nth=-1")
    ors_label = page.locator("#chart-ors-total a.chart-point").first.get_attribute("aria-label")
    srs_label = page.locator("#chart-srs-total a.chart-point").first.get_attribute("aria-label")
    assert ors_label.startswith("ORS ") and srs_label.startswith("SRS ")
    srs_total = float(srs_label.split()[1])
    assert srs_total < 36
    alerts = page.inner_text("section[aria-labelledby=client-alerts]")
    assert "SRS: Alliance concern" in alerts and f"SRS {srs_label.split()[1]} in session 1 (cutoff 36)" in alerts
    check_accessibility(page, "client page")
    screenshot(page, "staff-client")

    # Tick the alert and acknowledge it with a note.
    page.check(".alert-list input[type=checkbox]")
    page.fill("textarea[name=note]", "Asked about the session; agreed to change the focus.")
    page.click("button:has-text('Acknowledge')")
    assert page.locator("#client-alerts").count() == 0

    # Every point leads to its response.
    page.locator("#chart-ors-total a.chart-point").first.click()
    assert "/responses/" in page.url
    check_accessibility(page, "response page")
