"""The client's side through links: validation, double submits, link states, CSRF, throttling and headers."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from plugin_support import InstrumentFiles
from staff_support import make_world, sign_in

import web.forms
from core.models import Assignment, AuditEntry, Client, Response, Score
from core.responses import create_assignment, stored_score_values

CLIENT_CODE = "CLIENT-SECRET-CODE-7731"

PHQ9_ALL_ONES = {f"phq9_{i}": "1" for i in range(1, 10)}

# A throwaway instrument with a free-text item, for markup and the other widgets.
TRYOUT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Tryout questionnaire",
    "type": "object",
    "required": ["try_mood", "try_line", "try_note", "try_count"],
    "additionalProperties": False,
    "properties": {
        "try_mood": {
            "type": ["integer", "null"],
            "enum": [0, 1, 2, None],
            "x-options": [
                {"value": 0, "label": "Never"},
                {"value": 1, "label": "Sometimes"},
                {"value": 2, "label": "Often"},
            ],
            "x-text": "How often do you try things out?",
        },
        "try_line": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 10,
            "multipleOf": 0.1,
            "x-widget": "vas",
            "x-text": "How was today?",
            "x-anchors": ["Bad", "Good"],
        },
        "try_note": {"type": ["string", "null"], "maxLength": 500, "x-text": "Anything else?", "x-optional": True},
        "try_count": {"type": ["integer", "null"], "minimum": 0, "maximum": 20, "x-text": "How many?"},
    },
    "x-instrument": {
        "id": "tryout",
        "version": "1.0.0",
        "citation": "Written for Rapportal's tests.",
        "licence": {"name": "test only", "notice": "test only", "wording_bundled": True},
    },
}


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "tryout.json"
    path.write_text(json.dumps(TRYOUT), encoding="utf-8")
    return {**app_config, "EXTRA_PLUGINS": [InstrumentFiles(path)], "LINK_GUESS_LIMIT": 5}


def make_link(app: Any, instrument_id: str = "phq9", **kwargs: Any) -> str:
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        client = session.scalar(sa.select(Client).where(Client.code == CLIENT_CODE))
        if client is None:
            client = Client(code=CLIENT_CODE, display_name="Secret Name")
            session.add(client)
        _assignment, token = create_assignment(session, state.engine, client, instrument_id, **kwargs)
    return token


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def open_form(client: Any, token: str) -> str:
    page = client.get(f"/a/{token}")
    assert page.status_code == 200
    return csrf_of(page.get_data(as_text=True))


def post(client: Any, token: str, answers: dict[str, Any], csrf: str | None = "fetch") -> Any:
    data = dict(answers)
    if csrf == "fetch":
        csrf = open_form(client, token)
    if csrf is not None:
        data["csrf_token"] = csrf
    return client.post(f"/a/{token}", data=data)


def stored_responses(app: Any) -> list[Response]:
    with app.extensions["rapportal"].sessions() as session:
        return list(session.scalars(sa.select(Response)))


def item_block(html: str, item_id: str) -> str:
    """The markup of one item (from its fieldset/div to the next item)."""
    start = html.index(f'id="item-{item_id}"')
    end = html.find('class="item ', start + 1)
    return html[start : end if end != -1 else len(html)]


def error_of(html: str, item_id: str) -> str | None:
    found = re.search(rf'<p class="error" id="{item_id}-error">([^<]*)</p>', html)
    return found.group(1) if found else None


def checked_values(html: str, item_id: str) -> list[str]:
    return re.findall(rf'name="{item_id}" value="([^"]*)" checked', html)


# --- a valid submission -------------------------------------------------------------------------------------------


def test_valid_phq9_is_stored_with_its_scores_and_receipt(app, client):
    token = make_link(app)
    answers = {**PHQ9_ALL_ONES, "phq9_9": "0", "phq9_3": "3"}
    response = post(client, token, answers)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    receipt = re.search(r'data-receipt="([^"]+)"', html).group(1)
    [stored] = stored_responses(app)
    assert stored.receipt == receipt
    assert stored.answers == {key: int(value) for key, value in answers.items()}
    with app.extensions["rapportal"].sessions() as session:
        score = session.get(Score, stored.id)
        assert stored_score_values(score) == {"total": Decimal(10)}
        assert score.band == "moderate"


# --- answers that do not fit: 422, message next to the item, answers kept, nothing stored --------------------------


def test_missing_answer_is_named_next_to_its_item_and_others_are_kept(app, client):
    token = make_link(app)
    answers = dict(PHQ9_ALL_ONES)
    del answers["phq9_4"]
    answers["phq9_2"] = "3"
    response = post(client, token, answers)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert error_of(html, "phq9_4") == "Please answer this question."
    assert 'id="phq9_4-error"' in item_block(html, "phq9_4")
    assert error_of(html, "phq9_1") is None
    assert checked_values(html, "phq9_2") == ["3"]
    assert checked_values(html, "phq9_4") == []
    assert 'href="#item-phq9_4"' in html  # the summary links to the item
    assert stored_responses(app) == []


@pytest.mark.parametrize(
    ("item_id", "value", "message"),
    [
        ("phq9_1", "4", "Please choose one of the answers shown."),
        ("phq9_1", "-1", "Please choose one of the answers shown."),
        ("phq9_1", "often", "Please choose one of the answers shown."),
        ("phq9_1", "1.0", "Please choose one of the answers shown."),
    ],
    ids=["above-range", "below-range", "wrong-type-word", "wrong-type-decimal"],
)
def test_out_of_range_and_wrong_type_choices_are_refused(app, client, item_id, value, message):
    token = make_link(app)
    response = post(client, token, {**PHQ9_ALL_ONES, item_id: value})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert error_of(html, item_id) == message
    assert stored_responses(app) == []


@pytest.mark.parametrize(
    ("item_id", "value", "message"),
    [
        ("try_line", "10.5", "Mark a point from 0 to 10."),
        ("try_line", "-0.1", "Mark a point from 0 to 10."),
        ("try_line", "7.25", "Use at most one decimal place, such as 7.3."),
        ("try_line", "seven", "Please mark the line, or type a number such as 7.3."),
        ("try_line", "nan", "Please mark the line, or type a number such as 7.3."),
        ("try_count", "2.5", "Please enter a whole number."),
        ("try_count", "lots", "Please enter a whole number."),
        ("try_count", "21", "Please check this answer: it is not one this question allows."),
    ],
    ids=["vas-above", "vas-below", "vas-two-decimals", "vas-word", "vas-nan", "int-decimal", "int-word", "int-above"],
)
def test_vas_and_number_answers_out_of_range_or_of_the_wrong_type_are_refused(app, client, item_id, value, message):
    token = make_link(app, "tryout")
    answers = {"try_mood": "1", "try_line": "5.5", "try_note": "", "try_count": "3", item_id: value}
    response = post(client, token, answers)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert error_of(html, item_id) == message
    assert f'value="{value}"' in item_block(html, item_id)  # the typed answer is kept to be corrected
    assert stored_responses(app) == []


def test_two_answers_to_one_item_are_refused(app, client):
    token = make_link(app)
    response = client.post(
        f"/a/{token}", data={**PHQ9_ALL_ONES, "phq9_5": ["0", "3"], "csrf_token": open_form(client, token)}
    )
    assert response.status_code == 422
    assert error_of(response.get_data(as_text=True), "phq9_5") == "Please give only one answer to this question."
    assert stored_responses(app) == []


def test_answers_to_items_the_instrument_does_not_have_are_refused(app, client):
    token = make_link(app)
    response = post(client, token, {**PHQ9_ALL_ONES, "phq9_10": "2"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "questions that are not part of this questionnaire" in html
    assert checked_values(html, "phq9_1") == ["1"]
    assert stored_responses(app) == []


# --- double submits and link states --------------------------------------------------------------------------------


def test_double_submit_stores_one_response_and_shows_the_same_receipt(app, client):
    token = make_link(app)
    csrf = open_form(client, token)
    first = post(client, token, PHQ9_ALL_ONES, csrf=csrf)
    second = post(client, token, {**PHQ9_ALL_ONES, "phq9_1": "3"}, csrf=csrf)
    receipts = [re.search(r'data-receipt="([^"]+)"', r.get_data(as_text=True)).group(1) for r in (first, second)]
    assert first.status_code == second.status_code == 200
    assert receipts[0] == receipts[1]
    assert "Thank you: your answers are saved" in first.get_data(as_text=True)
    assert "already completed" in second.get_data(as_text=True)
    [stored] = stored_responses(app)
    assert stored.answers["phq9_1"] == 1  # the first submit counts; the second changes nothing


def test_a_retry_after_a_lost_reply_shows_the_receipt_and_records_nothing_new(app, client):
    """The POST reached the server and was stored, but the reply never arrived: the browser sends it again."""
    token = make_link(app)
    csrf = open_form(client, token)
    first = post(client, token, PHQ9_ALL_ONES, csrf=csrf)
    with app.extensions["rapportal"].sessions() as session:
        audit_entries = session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    retry = post(client, token, PHQ9_ALL_ONES, csrf=csrf)
    receipt = re.search(r'data-receipt="([^"]+)"', first.get_data(as_text=True)).group(1)
    assert retry.status_code == 200
    assert f'data-receipt="{receipt}"' in retry.get_data(as_text=True)
    assert len(stored_responses(app)) == 1
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == audit_entries


def test_answers_and_errors_on_one_page_never_show_on_the_next_clients_form(app, client, licensed_wording):
    """Untouched items are rendered once per instrument and language; answered or refused ones per page."""
    first = post(client, make_link(app), {"phq9_1": "3"})
    assert first.status_code == 422 and checked_values(first.get_data(as_text=True), "phq9_1") == ["3"]
    html = client.get(f"/a/{make_link(app)}").get_data(as_text=True)
    assert all(checked_values(html, f"phq9_{i}") == [] for i in range(1, 10))
    assert 'class="error"' not in html and "aria-invalid" not in html
    english = client.get(f"/a/{make_link(app, 'srs')}").get_data(as_text=True)
    german = client.get(f"/a/{make_link(app, 'srs', language='de')}").get_data(as_text=True)
    assert "Not marked yet" in english and "Noch nicht markiert" not in english
    assert "Noch nicht markiert" in german and "Not marked yet" not in german


def test_the_link_form_offers_its_script_the_texts_to_say_sending_failed(app, client):
    html = client.get(f"/a/{make_link(app, language='de')}").get_data(as_text=True)
    assert f'data-keep-seconds="{app.config["CSRF_TIME_LIMIT"]}"' in html
    assert "Das Senden ist fehlgeschlagen" in html
    assert "data-send-status" in html and 'aria-live="polite"' in html


def test_used_link_shows_already_completed_with_the_receipt_and_nothing_else(app, client):
    token = make_link(app)
    receipt = re.search(r'data-receipt="([^"]+)"', post(client, token, PHQ9_ALL_ONES).get_data(as_text=True)).group(1)
    page = client.get(f"/a/{token}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "This questionnaire is already completed" in html
    assert receipt in html
    for secret in (CLIENT_CODE, "Secret Name", "PHQ-9", "Patient Health", "<form"):
        assert secret not in html


def _expire(app: Any) -> None:
    with app.extensions["rapportal"].sessions.begin() as session:
        for assignment in session.scalars(sa.select(Assignment)):
            assignment.expires_at = datetime.now(UTC) - timedelta(minutes=1)


def test_expired_link_gets_a_plain_410_page_that_reveals_nothing(app, client):
    token = make_link(app)
    csrf = open_form(client, token)
    _expire(app)
    for response in (client.get(f"/a/{token}"), post(client, token, PHQ9_ALL_ONES, csrf=csrf)):
        html = response.get_data(as_text=True)
        assert response.status_code == 410
        assert "This link has expired" in html
        for secret in (CLIENT_CODE, "Secret Name", "PHQ-9", "Patient Health", "<form", "phq9"):
            assert secret not in html
    assert stored_responses(app) == []


def test_unknown_link_gets_a_plain_404_page(app, client):
    make_link(app)
    response = client.get("/a/not-a-real-token-at-all")
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "This page or link is not valid" in html
    assert CLIENT_CODE not in html and "<form" not in html


def test_expired_and_unknown_links_look_the_same_to_a_guesser_apart_from_the_status(app, client):
    """Neither page names an instrument or a client, so a 410 only says that the token once existed."""
    token = make_link(app)
    _expire(app)
    expired = client.get(f"/a/{token}").get_data(as_text=True)
    unknown = client.get("/a/" + "x" * 32).get_data(as_text=True)

    def strip(html: str) -> str:
        return re.sub(r"<title>.*?</title>|<h1>.*?</p>", "", html, flags=re.S)

    assert strip(expired) == strip(unknown)


# --- CSRF ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "csrf",
    [None, "", "12345.deadbeef", f"{int(time.time())}.{'0' * 64}", "not-a-token"],
    ids=["absent", "empty", "short-mac", "forged-mac", "garbage"],
)
def test_forged_or_absent_csrf_token_stores_nothing_and_keeps_the_answers(app, client, csrf):
    token = make_link(app)
    response = post(client, token, {**PHQ9_ALL_ONES, "phq9_6": "2"}, csrf=csrf)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "This form could not be verified" in html
    assert checked_values(html, "phq9_6") == ["2"]
    assert csrf_of(html) != (csrf or "")  # a fresh token to send again with
    assert stored_responses(app) == []


def test_csrf_token_of_another_link_is_refused(app, client):
    first, second = make_link(app), make_link(app)
    response = post(client, second, PHQ9_ALL_ONES, csrf=open_form(client, first))
    assert response.status_code == 422
    assert stored_responses(app) == []


def test_old_csrf_token_reshows_the_form_with_answers_kept_and_the_fresh_token_works(app, client, monkeypatch):
    token = make_link(app)
    old = open_form(client, token)
    later = time.time() + app.config["CSRF_TIME_LIMIT"] + 60

    class Later:
        @staticmethod
        def time() -> float:
            return later

    monkeypatch.setattr(web.forms, "time", Later)
    response = post(client, token, {**PHQ9_ALL_ONES, "phq9_8": "3"}, csrf=old)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Your answers are kept" in html
    assert checked_values(html, "phq9_8") == ["3"]
    assert stored_responses(app) == []
    again = post(client, token, {**PHQ9_ALL_ONES, "phq9_8": "3"}, csrf=csrf_of(html))
    assert again.status_code == 200
    [stored] = stored_responses(app)
    assert stored.answers["phq9_8"] == 3


# --- markup in answers ---------------------------------------------------------------------------------------------

MARKUP = '<script>alert("x")</script><b onmouseover="y">bold</b> & "quotes"'


def test_markup_in_free_text_is_shown_escaped_and_stored_verbatim(app, client):
    token = make_link(app, "tryout")
    answers = {"try_mood": "", "try_line": "5.5", "try_note": MARKUP, "try_count": "3"}
    response = post(client, token, answers)  # try_mood missing: the form comes back with the note in it
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "<script>alert" not in html and "<b onmouseover" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b onmouseover=&#34;y&#34;&gt;" in html
    again = post(client, token, {**answers, "try_mood": "2"})
    assert again.status_code == 200
    [stored] = stored_responses(app)
    assert stored.answers["try_note"] == MARKUP


def test_markup_in_a_choice_value_is_escaped_when_the_form_is_shown_again(app, client):
    token = make_link(app)
    html = post(client, token, {**PHQ9_ALL_ONES, "phq9_1": '"><script>x</script>'}).get_data(as_text=True)
    assert "<script>x" not in html


# --- throttling, size limit, headers -------------------------------------------------------------------------------


def test_guessing_tokens_is_throttled_per_address(app, client):
    token = make_link(app)
    limit = app.config["LINK_GUESS_LIMIT"]
    for n in range(limit):
        assert client.get(f"/a/guess-{n}").status_code == 404
    blocked = client.get("/a/guess-again")
    assert blocked.status_code == 429
    assert "Too many attempts" in blocked.get_data(as_text=True)
    assert client.get(f"/a/{token}").status_code == 429  # no oracle for real tokens while blocked
    other = client.get(f"/a/{token}", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200  # another address is not affected


def test_valid_links_do_not_count_towards_the_throttle(app, client):
    token = make_link(app)
    limit = app.config["LINK_GUESS_LIMIT"]
    for _ in range(limit + 2):
        assert client.get(f"/a/{token}").status_code == 200
    # the valid requests added nothing: the full allowance of guesses is still there
    assert [client.get("/a/wrong-token").status_code for _ in range(limit + 1)] == [404] * limit + [429]


def test_oversized_post_is_refused_with_413_and_nothing_stored(app, client):
    token = make_link(app, "tryout")
    big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    data = {"try_mood": "1", "try_line": "5", "try_note": big, "try_count": "1", "csrf_token": open_form(client, token)}
    response = client.post(f"/a/{token}", data=data)
    assert response.status_code == 413
    assert "That was too much to send at once" in response.get_data(as_text=True)
    assert stored_responses(app) == []


def test_security_headers_on_form_done_and_error_pages(app, client):
    token = make_link(app)
    pages = [client.get(f"/a/{token}"), post(client, token, {}), post(client, token, PHQ9_ALL_ONES)]
    pages += [client.get(f"/a/{token}"), client.get("/a/unknown-token")]
    for page in pages:
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_load_nothing_from_outside_the_portal(app, client):
    token = make_link(app)
    html = client.get(f"/a/{token}").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<style" not in html and " style=" not in html and "<script>" not in html  # the CSP forbids inline code


def test_submission_is_audited_with_the_address(app, client):
    token = make_link(app)
    post(client, token, PHQ9_ALL_ONES)
    with app.extensions["rapportal"].sessions() as session:
        [entry] = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "response.submit")).all()
    assert entry.address == "127.0.0.1"


def test_an_abort_with_a_description_shows_it_escaped(app):
    from flask import abort

    @app.get("/_test_abort")
    def _test_abort():
        abort(422, description="episode: <b>must</b> be a number")

    response = app.test_client().get("/_test_abort")
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert "episode: &lt;b&gt;must&lt;/b&gt; be a number" in body


def test_behind_a_proxy_guesses_are_throttled_per_client_address(app_config, tmp_path, monkeypatch):
    from web import create_app

    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "proxied"))
    app = create_app({**app_config, "PROXY_HOPS": 1, "LINK_GUESS_LIMIT": 2})
    proxy = app.test_client()

    def guess(client_address):
        return proxy.get("/a/not-a-real-token", headers={"X-Forwarded-For": client_address}).status_code

    assert [guess("203.0.113.7") for _ in range(3)] == [404, 404, 429]
    assert guess("198.51.100.2") == 404  # another client behind the same proxy is not throttled
    app.extensions["rapportal"].db.dispose()


def test_without_proxy_hops_a_forged_forwarded_header_is_ignored(client, app):
    app.config["LINK_GUESS_LIMIT"] = 2
    codes = [
        client.get("/a/not-a-real-token", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(3)
    ]
    assert codes == [404, 404, 429]


# --- the database goes away --------------------------------------------------------------------------------------


class DatabaseSwitch:
    """Makes every new connection to the app's database fail, as during a restart or a failover."""

    def __init__(self, app: Any) -> None:
        self.db = app.extensions["rapportal"].db
        self.down = False
        self.attempts = 0
        sa.event.listen(self.db, "do_connect", self._connect)

    def _connect(self, dialect: Any, _record: Any, _args: Any, _kwargs: Any) -> Any:
        if self.down:
            self.attempts += 1
            message = "unable to open database file" if dialect.name == "sqlite" else "connection refused"
            raise dialect.dbapi.OperationalError(message)
        return None

    def stop(self) -> None:
        self.down = True
        self.db.dispose()  # the pooled connections go with the server

    def start(self) -> None:
        self.down = False


def test_a_submit_while_the_database_is_unreachable_keeps_the_answers_and_stores_once_sent_again(app, client):
    app.config["DB_RETRY_SECONDS"] = 0.3
    token = make_link(app)
    csrf = open_form(client, token)
    switch = DatabaseSwitch(app)
    switch.stop()
    refused = client.post(f"/a/{token}", data={**PHQ9_ALL_ONES, "csrf_token": csrf})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 503 and switch.attempts > 1  # tried again before giving up
    assert "not saved yet" in html and "Traceback" not in html
    kept = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))
    assert kept == {**PHQ9_ALL_ONES, "csrf_token": csrf}
    assert f'action="/a/{token}"' in html
    switch.start()
    assert stored_responses(app) == []
    sent_again = client.post(f"/a/{token}", data=kept)
    assert sent_again.status_code == 200 and "receipt" in sent_again.get_data(as_text=True).lower()
    assert client.post(f"/a/{token}", data=kept).status_code == 200  # a second press stores nothing more
    assert len(stored_responses(app)) == 1


def test_a_database_that_returns_within_the_retries_loses_no_submit(app, client, monkeypatch):
    token = make_link(app)
    csrf = open_form(client, token)
    switch = DatabaseSwitch(app)
    switch.stop()
    real_sleep = time.sleep

    def restart_during_the_wait(seconds: float) -> None:
        switch.start()  # the server is back after the first pause
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", restart_during_the_wait)
    reply = client.post(f"/a/{token}", data={**PHQ9_ALL_ONES, "csrf_token": csrf})
    assert reply.status_code == 200 and switch.attempts >= 1
    assert len(stored_responses(app)) == 1


def test_staff_pages_answer_503_with_a_plain_message_while_the_database_is_unreachable(app, client):
    app.config["DB_RETRY_SECONDS"] = 0.1
    make_world(app)
    sign_in(client, "ann")
    switch = DatabaseSwitch(app)
    switch.stop()
    for path in ("/caseload", "/", f"/a/{'x' * 32}"):
        page = client.get(path)
        html = page.get_data(as_text=True)
        assert page.status_code == 503, path
        assert "cannot be reached just now" in html and "Traceback" not in html and "OperationalError" not in html


def test_a_link_page_carries_the_name_of_the_clients_site(app, client):
    from core.sites import create_site, move_client

    token = make_link(app)
    assert '<span class="site-name">Rapportal</span>' in client.get(f"/a/{token}").get_data(as_text=True)
    with app.extensions["rapportal"].sessions.begin() as session:
        site = create_site(session, "North <Clinic>", actor="test", address=None)
        patient = session.scalar(sa.select(Client).where(Client.code == CLIENT_CODE))
        move_client(session, None, patient, site.id, actor="test", address=None)
    page = client.get(f"/a/{token}").get_data(as_text=True)
    assert '<span class="site-name">North &lt;Clinic&gt;</span>' in page and "North <Clinic>" not in page


# --- kept pages (web/kept.py): rendered once, filled in per request ---------------------------------------------


def test_fresh_forms_of_two_links_differ_only_in_their_action_and_form_token_and_each_token_fits_its_link(app, client):
    first, second = make_link(app), make_link(app)
    pages = [client.get(f"/a/{token}").get_data(as_text=True) for token in (first, second)]
    tokens = [csrf_of(page) for page in pages]
    assert f'action="/a/{first}"' in pages[0] and f'action="/a/{second}"' in pages[1]
    assert "rapportal-kept" not in pages[0] + pages[1]
    same = [
        page.replace(token, "T").replace(csrf, "C")
        for page, token, csrf in zip(pages, (first, second), tokens, strict=True)
    ]
    assert same[0] == same[1]
    # each form token belongs to its own link: swapped, both are refused and nothing is stored
    assert client.post(f"/a/{first}", data={**PHQ9_ALL_ONES, "csrf_token": tokens[1]}).status_code == 422
    assert stored_responses(app) == []
    for token, csrf in zip((first, second), tokens, strict=True):
        assert client.post(f"/a/{token}", data={**PHQ9_ALL_ONES, "csrf_token": csrf}).status_code == 200
    assert len(stored_responses(app)) == 2


def test_a_form_served_under_a_path_prefix_posts_to_its_own_address_under_that_prefix(app, client):
    token = make_link(app)
    prefix = "http://localhost/portal"  # mounted there, as behind a proxy that passes SCRIPT_NAME
    page = client.get(f"/a/{token}", base_url=prefix).get_data(as_text=True)
    assert f'action="/portal/a/{token}"' in page
    csrf = csrf_of(page)
    refused = client.post(f"/a/{token}", data={"csrf_token": csrf}, base_url=prefix)
    assert refused.status_code == 422 and f'action="/portal/a/{token}"' in refused.get_data(as_text=True)


def test_receipt_pages_show_each_submissions_own_receipt(app, client):
    receipts = []
    for _ in range(3):
        html = post(client, make_link(app), PHQ9_ALL_ONES).get_data(as_text=True)
        assert "Thank you: your answers are saved" in html
        receipts.append(re.findall(r'data-receipt="([^"]+)">([^<]+)<', html))
    stored = sorted(r.receipt for r in stored_responses(app))
    assert sorted(shown for [(shown, again)] in receipts if shown == again) == stored and len(set(stored)) == 3


def test_a_kept_form_follows_the_links_language(app, client):
    english, german = make_link(app), make_link(app, language="de")
    assert '<html lang="en">' in client.get(f"/a/{english}").get_data(as_text=True)
    page = client.get(f"/a/{german}").get_data(as_text=True)
    assert '<html lang="de">' in page and "Meine Antworten senden" in page
    assert '<html lang="en">' in client.get(f"/a/{english}").get_data(as_text=True)


def test_the_api_answers_503_as_problem_details_while_the_database_is_unreachable(app, client):
    app.config["DB_RETRY_SECONDS"] = 0.1
    switch = DatabaseSwitch(app)
    switch.stop()
    reply = client.get("/api/v1/instruments", headers={"Authorization": "Bearer rpk_not-checked-while-down"})
    assert reply.status_code == 503
    assert reply.mimetype == "application/problem+json" and reply.headers["Retry-After"] == "5"
    assert reply.get_json()["detail"] == "The database cannot be reached just now; try again shortly."
