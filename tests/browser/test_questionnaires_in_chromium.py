"""End to end in headless Chromium: answer, submit, check what was stored, and axe-core on every client page."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from core.models import Response
from core.responses import stored_score_values

pytestmark = pytest.mark.browser

PHQ9_ANSWERS = {"phq9_1": 2, "phq9_2": 1, "phq9_3": 3, "phq9_4": 0, "phq9_5": 1, "phq9_6": 2, "phq9_7": 0}
PHQ9_ANSWERS |= {"phq9_8": 1, "phq9_9": 0}
PHQ9_LABELS = ["Not at all", "Several days", "More than half the days", "Nearly every day"]


def stored(app: Any) -> list[tuple[Response, dict[str, Decimal | None]]]:
    with app.extensions["rapportal"].sessions() as session:
        return [(r, stored_score_values(r.score)) for r in session.scalars(sa.select(Response))]


def receipt_on(page: Any) -> str:
    text = page.locator(".receipt").inner_text()
    assert re.fullmatch(r"[0-9A-F]{8}", text), text
    return text


def send(page: Any, click: str = "click") -> None:
    """Press the send button and wait until the next page is shown (and its script has run).

    With its script a link form sends with fetch and shows the server's page in place; without it
    the browser navigates.
    """
    button = page.get_by_role("button", name="Send my answers")
    if page.evaluate("!!document.querySelector('html.js form[data-keep]')"):
        with page.expect_response(lambda response: response.request.method == "POST"):
            getattr(button, click)()
        page.locator("form[data-sending]").wait_for(state="detached")
    else:
        with page.expect_navigation():
            getattr(button, click)()


def choose(page: Any, item_id: str, label: str) -> None:
    """Tap the answer's label (the large touch target), not the small radio button."""
    page.locator(f"#item-{item_id} label.choice", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")).click()


def test_phq9_answered_end_to_end(app, live_server, page, make_link, check_accessibility, screenshot):
    token = make_link("phq9")
    page.goto(f"{live_server}/a/{token}")
    assert page.locator("html").get_attribute("lang") == "en"
    check_accessibility(page, "PHQ-9 form")
    screenshot(page, "phq9-form")
    for item_id, value in PHQ9_ANSWERS.items():
        choose(page, item_id, PHQ9_LABELS[value])
    send(page)
    page.wait_for_selector(".receipt")
    assert page.get_by_role("heading", level=1).inner_text() == "Thank you: your answers are saved"
    check_accessibility(page, "receipt page")
    screenshot(page, "receipt")
    receipt = receipt_on(page)

    [(response, scores)] = stored(app)
    assert response.answers == PHQ9_ANSWERS
    assert response.receipt == receipt
    assert scores == {"total": Decimal(10)}
    assert response.score.band == "moderate"
    assert response.score.flags == ["clinical_cutoff"]

    page.goto(f"{live_server}/a/{token}")
    assert page.get_by_role("heading", level=1).inner_text() == "This questionnaire is already completed"
    assert receipt_on(page) == receipt
    check_accessibility(page, "already-completed page")
    screenshot(page, "already-completed")


def test_phq9_errors_are_shown_next_to_the_items_with_the_answers_kept(
    app, live_server, page, make_link, check_accessibility, screenshot
):
    token = make_link("phq9")
    page.goto(f"{live_server}/a/{token}")
    choose(page, "phq9_1", "Nearly every day")
    choose(page, "phq9_5", "Several days")
    send(page)
    page.wait_for_selector("#error-summary")
    assert page.evaluate("document.activeElement.id") == "error-summary"  # the summary is announced first
    assert page.locator("#phq9_2-error").inner_text() == "Please answer this question."
    assert page.locator("#phq9_1-error").count() == 0
    assert page.locator("#item-phq9_1 input[value='3']").is_checked()
    assert page.locator("#item-phq9_5 input[value='1']").is_checked()
    check_accessibility(page, "PHQ-9 form with errors")
    screenshot(page, "phq9-form-errors")
    page.locator("#error-summary a", has_text="Question 2").click()
    assert page.evaluate("location.hash") == "#item-phq9_2"
    assert stored(app) == []


def test_double_clicked_submit_stores_one_response(app, live_server, page, make_link):
    token = make_link("phq9")
    page.goto(f"{live_server}/a/{token}")
    for item_id in PHQ9_ANSWERS:
        choose(page, item_id, "Not at all")
    send(page, "dblclick")
    page.wait_for_selector(".receipt")
    assert len(stored(app)) == 1


# --- the visual analogue scale ------------------------------------------------------------------------------------


def vas_track(page: Any, item_id: str) -> Any:
    return page.locator(f"#item-{item_id} [role=slider]")


def vas_value(page: Any, item_id: str) -> str:
    return page.locator(f"#item-{item_id} input.vas-input").input_value()


def click_on_line(page: Any, item_id: str, value: float) -> None:
    """Click the line where ``value`` lies (0-10), measured from the line's drawn ends."""
    box = page.locator(f"#item-{item_id} .vas-line").bounding_box()
    page.mouse.click(box["x"] + box["width"] * value / 10, box["y"] + box["height"] / 2)


def test_vas_starts_with_no_mark(app, live_server, page, make_link, licensed_wording, check_accessibility):
    token = make_link("srs")
    page.goto(f"{live_server}/a/{token}")
    for n in range(1, 5):
        track = vas_track(page, f"srs_{n}")
        assert track.is_visible()
        assert page.locator(f"#item-srs_{n} .vas-mark").is_hidden()
        assert track.get_attribute("aria-valuetext") == "Not marked yet"
        assert vas_value(page, f"srs_{n}") == ""
        assert page.locator(f"#item-srs_{n} input.vas-input").is_hidden()  # the typed fallback is for no-JS only
    check_accessibility(page, "SRS form")


def test_srs_answered_by_pointer_and_keyboard_end_to_end(
    app, live_server, page, make_link, licensed_wording, check_accessibility, screenshot
):
    token = make_link("srs")
    page.goto(f"{live_server}/a/{token}")
    screenshot(page, "srs-form-unmarked")

    click_on_line(page, "srs_1", 7.3)
    assert vas_value(page, "srs_1") == "7.3"
    assert vas_track(page, "srs_1").get_attribute("aria-valuenow") == "7.3"
    assert vas_track(page, "srs_1").get_attribute("aria-valuetext") == "7.3"
    assert page.locator("#item-srs_1 .vas-mark").is_visible()
    click_on_line(page, "srs_1", 0.4)  # a second tap moves the mark
    assert vas_value(page, "srs_1") == "0.4"

    page.keyboard.press("Tab")  # focus moves on from the line just clicked
    assert page.evaluate("document.activeElement.closest('.item').id") == "item-srs_2"
    for key in ("Home", "ArrowRight", "ArrowRight", "ArrowUp", "PageUp"):
        page.keyboard.press(key)
    assert vas_value(page, "srs_2") == "1.3"

    vas_track(page, "srs_3").focus()
    for key in ("End", "ArrowLeft", "PageDown", "ArrowDown"):
        page.keyboard.press(key)
    assert vas_value(page, "srs_3") == "8.8"
    page.keyboard.press("End")
    page.keyboard.press("PageUp")  # stops at the end of the line
    assert vas_value(page, "srs_3") == "10.0"
    page.keyboard.press("PageDown")
    assert vas_value(page, "srs_3") == "9.0"

    vas_track(page, "srs_4").focus()
    page.keyboard.press("ArrowRight")  # from no mark, the first step starts at the left end
    page.keyboard.press("ArrowRight")
    assert vas_value(page, "srs_4") == "0.2"
    assert vas_track(page, "srs_4").get_attribute("aria-valuenow") == "0.2"

    check_accessibility(page, "SRS form, marked")
    screenshot(page, "srs-form-marked")
    send(page)
    page.wait_for_selector(".receipt")

    [(response, scores)] = stored(app)
    assert response.answers == {"srs_1": 0.4, "srs_2": 1.3, "srs_3": 9.0, "srs_4": 0.2}
    assert scores == {"total": Decimal("10.9")}
    assert "alliance_concern" in response.score.flags


@pytest.mark.parametrize("value", [0.0, 2.5, 5.0, 9.9, 10.0])
def test_vas_pointer_value_matches_the_position_on_a_phone(app, live_server, page, make_link, licensed_wording, value):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{live_server}/a/{make_link('srs')}")
    click_on_line(page, "srs_1", value)
    assert Decimal(vas_value(page, "srs_1")) == Decimal(str(value))


def test_vas_unset_line_sends_nothing_and_is_reported_missing(app, live_server, page, make_link, licensed_wording):
    page.goto(f"{live_server}/a/{make_link('srs')}")
    click_on_line(page, "srs_1", 5.0)
    send(page)
    page.wait_for_selector("#error-summary")
    assert page.locator("#srs_2-error").inner_text() == "Please answer this question."
    assert vas_value(page, "srs_1") == "5.0"  # the mark is kept
    assert page.locator("#item-srs_1 .vas-mark").is_visible()
    assert page.locator("#item-srs_2 .vas-mark").is_hidden()
    assert stored(app) == []


def test_vas_without_javascript_takes_a_typed_value(
    app, live_server, page_without_js, make_link, licensed_wording, check_accessibility, screenshot
):
    page = page_without_js
    page.goto(f"{live_server}/a/{make_link('srs')}")
    assert vas_track(page, "srs_1").is_hidden()
    for n, typed in enumerate(["6.4", "7", "0", "10,0"], start=1):
        field = page.get_by_label(re.compile("Your mark")).nth(n - 1)
        assert field.input_value() == ""
        field.fill(typed)
    screenshot(page, "srs-form-no-js")  # axe itself needs JavaScript: see the test below
    send(page)
    page.wait_for_selector(".receipt")
    [(response, scores)] = stored(app)
    assert response.answers == {"srs_1": 6.4, "srs_2": 7.0, "srs_3": 0.0, "srs_4": 10.0}
    assert scores == {"total": Decimal("23.4")}


def test_form_without_its_script_is_accessible(
    app, live_server, page, make_link, licensed_wording, check_accessibility
):
    """The no-JavaScript layout (typed VAS fallback), checked by axe with only the portal's script blocked."""
    page.route("**/rapportal.js", lambda route: route.abort())
    page.goto(f"{live_server}/a/{make_link('srs')}")
    assert page.locator("#item-srs_1 input.vas-input").is_visible()
    assert vas_track(page, "srs_1").is_hidden()
    check_accessibility(page, "SRS form without its script")
    send(page)
    check_accessibility(page, "SRS form with errors, without its script")


# --- the plain pages ----------------------------------------------------------------------------------------------


def test_plain_pages_are_accessible(app, live_server, page, make_link, check_accessibility, screenshot):
    token = make_link("phq9")
    with app.extensions["rapportal"].sessions.begin() as session:
        from core.models import Assignment

        for assignment in session.scalars(sa.select(Assignment)):
            assignment.expires_at = assignment.created_at.replace(year=2000)
    expired = page.goto(f"{live_server}/a/{token}")
    assert expired.status == 410
    check_accessibility(page, "410 page")
    screenshot(page, "link-expired-410")

    unknown = page.goto(f"{live_server}/a/no-such-link")
    assert unknown.status == 404
    check_accessibility(page, "404 page")
    screenshot(page, "link-unknown-404")

    for n in range(app.config["LINK_GUESS_LIMIT"]):
        page.request.get(f"{live_server}/a/guess-{n}")
    throttled = page.goto(f"{live_server}/a/guess-last")
    assert throttled.status == 429
    check_accessibility(page, "429 page")
    screenshot(page, "link-throttled-429")
