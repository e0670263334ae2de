"""The client's side: answer a questionnaire through a link (``/a/<token>``).

A wrong, expired or used link gets a plain page with the right status code and nothing
about any client. Unknown-token requests are counted per address and throttled.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, render_template, request, url_for

from core import ResponseValidationError
from core.models import Assignment
from core.responses import LinkError, LinkLookup, is_expired, is_held, look_up_link, retry_database, submit_by_token
from core.throttle import attempts, count_attempt
from core.wording import refresh_wording
from web.access import address
from web.flow import own_trends
from web.forms import (
    answers_from,
    has_unknown_fields,
    mark_refused_answers,
    questionnaire_form,
    render_questionnaire,
)
from web.state import db_session, drop_db_session, portal

bp = Blueprint("client", __name__, url_prefix="/a")

THROTTLE_WINDOW = 600  # seconds


def _unknown_link() -> Any:
    limit = current_app.config["LINK_GUESS_LIMIT"]
    key = f"link:{address()}"
    if attempts(db_session(read_only=True), key, THROTTLE_WINDOW) >= limit:
        abort(429)  # already throttled: refused without writing
    drop_db_session()  # the lookup read without the write lock; counting the guess writes
    session = db_session()
    count_attempt(session, key, THROTTLE_WINDOW)
    session.commit()
    abort(404)


def _load(token: str) -> Assignment:
    """The link's assignment, waiting a few seconds for a database that restarts (then 503).

    The lookup only reads (on SQLite without the write lock), so page views never queue behind
    submissions; the submission itself opens its own writing transaction. One statement reads the
    link with its response, the address's throttle count, the site and the wording stamp.
    """

    def find() -> LinkLookup:
        session = db_session(read_only=True, wording=False)
        found = look_up_link(session, token, guess_key=f"link:{address()}", window_seconds=THROTTLE_WINDOW)
        if found.assignment is not None:
            refresh_wording(session, portal().engine, found.wording_stamp)
        return found

    found = retry_database(find, seconds=float(current_app.config["DB_RETRY_SECONDS"]), reset=drop_db_session)
    if found.assignment is None:
        _unknown_link()
    if found.guesses >= current_app.config["LINK_GUESS_LIMIT"]:
        abort(429)  # valid links too, so that a 429 tells nothing about which tokens are real
    g.site_name = found.site_name  # the page header's clinic
    g.language = found.assignment.language
    return found.assignment


def _form_page(assignment: Assignment, instrument: Any, token: str, form: Any, status: int = 200, **context: Any):
    page = render_questionnaire(
        "client/form.html",
        instrument,
        assignment.language,
        form,
        action=url_for("client.submit", token=token),
        # the browser keeps unsent answers (sessionStorage) no longer than the form itself is valid
        keep_seconds=current_app.config["CSRF_TIME_LIMIT"],
        **context,
    )
    return page, status


def _done_page(receipt: str, first_time: bool, assignment_id: int | None = None):
    return render_template("client/done.html", receipt=receipt, first_time=first_time, trends=own_trends(assignment_id))


def _held_page(status: int = 200):
    """An end-of-session questionnaire before the clinician released it: say plainly when it comes."""
    return render_template("client/held.html"), status


@bp.get("/<token>")
def answer(token: str):
    assignment = _load(token)
    if assignment.response is not None:
        return _done_page(assignment.response.receipt, first_time=False, assignment_id=assignment.id)
    if is_expired(assignment):
        abort(410)
    if is_held(assignment):
        return _held_page()
    instrument = _instrument(assignment)
    form = questionnaire_form(instrument, None, assignment.token_hash)
    return _form_page(assignment, instrument, token, form)


@bp.post("/<token>")
def submit(token: str):
    assignment = _load(token)
    if assignment.response is not None:  # a repeated or double-clicked submit
        return _done_page(assignment.response.receipt, first_time=False, assignment_id=assignment.id)
    if is_expired(assignment):
        abort(410)
    if is_held(assignment):
        return _held_page(409)
    instrument = _instrument(assignment)
    form = questionnaire_form(instrument, request.form, assignment.token_hash)
    valid = form.validate()
    if not valid or has_unknown_fields(instrument, request.form):
        return _form_page(assignment, instrument, token, form, 422, unknown=valid)
    answers = answers_from(form, instrument)
    assignment_id = assignment.id
    db_session().close()  # the submission runs in its own transaction
    try:
        submission = submit_by_token(
            portal().sessions,
            portal().engine,
            token,
            answers,
            address=address(),
            retry_seconds=float(current_app.config["DB_RETRY_SECONDS"]),
        )
    except ResponseValidationError as exc:
        mark_refused_answers(form, exc)
        return _form_page(assignment, instrument, token, form, 422)
    except LinkError as exc:
        if exc.reason == "held":
            return _held_page(409)
        abort(410 if exc.reason == "expired" else 404)
    return _done_page(submission.receipt, first_time=submission.created, assignment_id=assignment_id)


def _instrument(assignment: Assignment):
    instrument = portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    if not instrument.wording_installed:  # licensed wording removed after the link was made
        abort(503)
    return instrument
