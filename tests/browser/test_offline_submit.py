"""A submit while the server is unreachable, then retried: the answers survive and are stored exactly once.

Chromium's requests are cut off with Playwright's routing: once before the POST reaches the server (the Wi-Fi
dropped), and once after the server stored the answers but before its reply arrived (the reply was lost).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_questionnaires_in_chromium import PHQ9_ANSWERS, PHQ9_LABELS, choose, receipt_on, send

from core.models import AuditEntry, Response

pytestmark = pytest.mark.browser

SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"  # as tests/browser/conftest.py
FAILED = "Sending failed, so your answers are not saved yet."


def keep_screenshot(page: Any, name: str) -> None:
    """A full-page screenshot at the test's own viewport (390x844 or 1280x800), kept as a test artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def stored(app: Any) -> list[Response]:
    with app.extensions["rapportal"].sessions() as session:
        return list(session.scalars(sa.select(Response)))


def submit_audits(app: Any) -> int:
    with app.extensions["rapportal"].sessions() as session:
        return session.scalar(
            sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == "response.submit")
        )


def answer_all(page: Any) -> None:
    for item_id, value in PHQ9_ANSWERS.items():
        choose(page, item_id, PHQ9_LABELS[value])


def checked_answers(page: Any) -> dict[str, int]:
    return page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('form.questionnaire input[type=radio]:checked')]"
        ".map(input => [input.name, Number(input.value)]))"
    )


def kept(page: Any, token: str) -> Any:
    text = page.evaluate(f"sessionStorage.getItem('rapportal:answers:/a/{token}')")
    return None if text is None else json.loads(text)


def press_send_while_offline(page: Any, cut_off: Any) -> None:
    """Press send with every POST to the link cut off by ``cut_off`` and wait for the failure message."""
    page.route("**/a/*", lambda route: cut_off(route) if route.request.method == "POST" else route.fallback())
    page.get_by_role("button", name="Send my answers").click()
    page.locator("[data-send-status]").filter(has_text=FAILED).wait_for()
    page.unroute("**/a/*")


@pytest.mark.parametrize("size", SIZES)
def test_a_send_that_never_reached_the_server_keeps_the_answers_and_the_retry_stores_once(
    app, live_server, page, make_link, check_accessibility, size
):
    page.set_viewport_size(SIZES[size])
    token = make_link("phq9")
    page.goto(f"{live_server}/a/{token}")
    answer_all(page)

    press_send_while_offline(page, lambda route: route.abort("internetdisconnected"))
    status = page.locator("[data-send-status]")
    assert status.get_attribute("role") == "status"
    assert "press “Send my answers” again" in status.inner_text()
    assert page.get_by_role("button", name="Send my answers").is_enabled()
    assert checked_answers(page) == PHQ9_ANSWERS  # nothing on the page was lost
    assert {name: int(value) for name, value in kept(page, token)["answers"]} == PHQ9_ANSWERS
    assert stored(app) == []
    check_accessibility(page, f"form after a failed send ({size})")
    keep_screenshot(page, f"offline-send-failed-{size}")

    # The tab is reloaded (or the phone discarded it) before the connection is back: the answers return.
    page.reload()
    assert checked_answers(page) == PHQ9_ANSWERS
    assert "filled in again" in page.locator("[data-send-status]").inner_text()
    check_accessibility(page, f"form with restored answers ({size})")

    send(page)  # online again
    page.wait_for_selector(".receipt")
    assert page.get_by_role("heading", level=1).inner_text() == "Thank you: your answers are saved"
    [response] = stored(app)
    assert response.answers == PHQ9_ANSWERS
    assert receipt_on(page) == response.receipt
    assert submit_audits(app) == 1
    assert kept(page, token) is None  # acknowledged: nothing stays on the device
    check_accessibility(page, f"receipt after the retry ({size})")
    keep_screenshot(page, f"offline-retry-receipt-{size}")


@pytest.mark.parametrize("size", SIZES)
def test_a_retry_after_a_lost_reply_shows_the_receipt_and_stores_nothing_new(
    app, live_server, page, make_link, check_accessibility, size
):
    page.set_viewport_size(SIZES[size])
    token = make_link("phq9")
    page.goto(f"{live_server}/a/{token}")
    answer_all(page)

    def reply_lost(route: Any) -> None:
        route.fetch()  # the server gets the answers and stores them ...
        route.abort("connectionreset")  # ... but its reply never reaches the browser

    press_send_while_offline(page, reply_lost)
    [response] = stored(app)
    assert checked_answers(page) == PHQ9_ANSWERS

    send(page)
    page.wait_for_selector(".receipt")
    assert receipt_on(page) == response.receipt  # the first response's receipt, not an error
    assert [r.id for r in stored(app)] == [response.id]
    assert submit_audits(app) == 1
    assert kept(page, token) is None
    check_accessibility(page, f"receipt after a retry of a stored response ({size})")


def test_a_server_error_keeps_the_answers_on_the_page(app, live_server, page, make_link):
    token = make_link("phq9")
    page.goto(f"{live_server}/a/{token}")
    answer_all(page)
    press_send_while_offline(page, lambda route: route.fulfill(status=502, body="Bad Gateway"))
    assert checked_answers(page) == PHQ9_ANSWERS
    assert stored(app) == []
    send(page)
    page.wait_for_selector(".receipt")
    assert len(stored(app)) == 1


def test_answers_kept_for_one_link_are_not_shown_on_another(app, live_server, page, make_link):
    first, second = make_link("phq9"), make_link("phq9")
    page.goto(f"{live_server}/a/{first}")
    answer_all(page)
    press_send_while_offline(page, lambda route: route.abort("internetdisconnected"))
    page.goto(f"{live_server}/a/{second}")
    assert checked_answers(page) == {}
    assert page.locator("[data-send-status]").inner_text() == ""


def test_kept_answers_older_than_the_form_are_dropped(app, live_server, page, make_link):
    token = make_link("phq9")
    page.goto(f"{live_server}/a/{token}")
    answer_all(page)
    press_send_while_offline(page, lambda route: route.abort("internetdisconnected"))
    limit = app.config["CSRF_TIME_LIMIT"]
    page.evaluate(
        f"key => {{ const kept = JSON.parse(sessionStorage.getItem(key)); kept.saved -= {limit + 1} * 1000;"
        " sessionStorage.setItem(key, JSON.stringify(kept)); }",
        f"rapportal:answers:/a/{token}",
    )
    page.reload()
    assert checked_answers(page) == {}
    assert kept(page, token) is None


def test_the_german_page_says_in_german_that_sending_failed(app, live_server, page, make_link):
    token = make_link("phq9", language="de")
    page.goto(f"{live_server}/a/{token}")
    assert page.locator("html").get_attribute("lang") == "de"
    for item_id in PHQ9_ANSWERS:
        page.locator(f"#item-{item_id} input[value='0']").check()
    page.route("**/a/*", lambda route: route.abort() if route.request.method == "POST" else route.fallback())
    page.locator("[data-submit]").click()
    status = page.locator("[data-send-status].alert")
    status.wait_for()
    assert "Senden" in status.inner_text() and "Sending" not in status.inner_text()
