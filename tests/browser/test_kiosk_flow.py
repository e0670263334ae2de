"""The kiosk flow of a PCOMS session in headless Chromium: ORS -> clinician release -> SRS, at phone and desktop size.

The clinician starts the session and opens kiosk mode on the tablet; the client answers the ORS; the tablet asks
to be handed back; the clinician releases the SRS there with their password (no sign-in); the client answers the
SRS; the tablet locks. Every screen passes axe (no serious or critical violation) at 390x844 and 1280x800, and
full-page screenshots of each are kept under test-artifacts/screenshots/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from staff_support import PASSWORD, make_world

from core.models import Response

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"  # as in conftest.py
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}


def _mark_line(page: Any, item_id: str, value: float) -> None:
    line = page.locator(f"#item-{item_id} .vas-line")
    line.scroll_into_view_if_needed()
    box = line.bounding_box()
    page.mouse.click(box["x"] + box["width"] * value / 10, box["y"] + box["height"] / 2)


def _check_at_both_sizes(page: Any, name: str, check_accessibility: Any) -> None:
    """axe at the phone and the desktop size, with a full-page screenshot of each."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in SIZES.items():
        page.set_viewport_size(size)
        check_accessibility(page, f"{name} at {label} size")
        page.screenshot(path=str(SCREENSHOTS / f"kiosk-flow-{name}-{label}.png"), full_page=True)
    page.set_viewport_size(SIZES["phone"])


def _answer(page: Any, prefix: str, value: float) -> None:
    for n in range(1, 5):
        _mark_line(page, f"{prefix}_{n}", value)
    with page.expect_navigation():
        page.click("[data-submit]")


def test_kiosk_flow_ors_then_clinician_release_then_srs(app, live_server, page, licensed_wording, check_accessibility):
    world = make_world(app)
    base = live_server
    page.set_viewport_size(SIZES["phone"])  # a tablet held upright is about this wide
    page.goto(f"{base}/login")
    page.fill("#username", "ann")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base}/clients/{world.client_id}")
    page.click("text=Start session 1 and make its links")
    page.get_by_role("link", name="Session page", exact=True).click()
    assert page.url.endswith("/sessions/1")
    assert "held until you release it" in page.inner_text("main")
    _check_at_both_sizes(page, "session-page", check_accessibility)
    page.get_by_role("button", name="Open in kiosk mode on this device").click()

    # The client: the ORS first (the SRS waits for the end of the session).
    assert page.url.endswith("/kiosk")
    assert "Questionnaire 1 of 2" in page.inner_text("main")
    _check_at_both_sizes(page, "ors", check_accessibility)
    _answer(page, "ors", 4.5)

    # The locked hand-back screen says what to do next; the clinician re-authenticates on the same device.
    main = page.inner_text("main")
    assert "Please hand the tablet back to your clinician." in main and "C-1" not in main
    _check_at_both_sizes(page, "handback", check_accessibility)
    page.fill("#password", "not my password")
    page.click("text=Release end-of-session measures")
    assert "This password is not right." in page.inner_text("main")
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("text=Release end-of-session measures")

    # The client: the SRS, then the tablet locks.
    assert "Questionnaire 2 of 2" in page.inner_text("main")
    _check_at_both_sizes(page, "srs", check_accessibility)
    _answer(page, "srs", 9.0)
    assert "This device is locked" in page.inner_text("main")
    _check_at_both_sizes(page, "locked", check_accessibility)

    # The release signed nobody in on the tablet.
    page.goto(f"{base}/caseload")
    assert "/login" in page.url
    with app.extensions["rapportal"].sessions() as session:
        assert [r.instrument_id for r in session.scalars(sa.select(Response).order_by(Response.id))] == ["ors", "srs"]
