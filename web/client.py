"""The client's side: answer a questionnaire through a link (``/a/<token>``).

A wrong, expired or used link gets a plain page with the right status code and nothing
about any client. Unknown-token requests are counted per address and throttled.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Blueprint, abort, current_app, g, render_template, request

from core import ResponseValidationError
from core.responses import LinkError, LinkLookup, LinkView, is_expired, look_up_link, retry_database, submit_link
from core.throttle import attempts, count_attempt
from core.wording import refresh_wording
from web.access import address
from web.flow import own_trends
from web.forms import PostedAnswers, fresh_questionnaire, mark_refused_answers, render_questionnaire
from web.kept import kept_page, mark
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


def _load(token: str) -> LinkView:
    """The link, waiting a few seconds for a database that restarts (then 503).

    The lookup only reads (on SQLite without the write lock), so page views never queue behind
    submissions; the submission itself opens its own writing transaction. One Core statement reads
    the link with its response, the address's throttle count, the site and the wording stamp.
    """

    def find() -> LinkLookup:
        found = look_up_link(portal().db, token, guess_key=f"link:{address()}", window_seconds=THROTTLE_WINDOW)
        if found.link is not None and found.wording_stamp != portal().engine.instruments.wording_stamp:
            # someone installed wording: read it (a newer install since is read by the next request)
            refresh_wording(db_session(read_only=True, wording=False), portal().engine, found.wording_stamp)
        return found

    found = retry_database(find, seconds=float(current_app.config["DB_RETRY_SECONDS"]), reset=drop_db_session)
    drop_db_session()  # the page needs nothing more from the database (a wording refresh opened a session)
    if found.link is None:
        _unknown_link()
    if found.guesses >= current_app.config["LINK_GUESS_LIMIT"]:
        abort(429)  # valid links too, so that a 429 tells nothing about which tokens are real
    g.site_name = found.site_name  # the page header's clinic
    g.language = found.link.language
    return found.link


def _own_address() -> str:
    """Where the questionnaire posts: the link's own address (one rule answers both), as url_for would build it."""
    return request.script_root + request.path


def _form_page(link: LinkView, instrument: Any, token: str, form: Any, status: int = 200, **context: Any):
    page = render_questionnaire(
        "client/form.html",
        instrument,
        link.language,
        form,
        action=_own_address(),
        # the browser keeps unsent answers (sessionStorage) no longer than the form itself is valid
        keep_seconds=current_app.config["CSRF_TIME_LIMIT"],
        **context,
    )
    return page, status


def _done_page(receipt: str, first_time: bool, link: LinkView):
    if link.show_progress:  # the client's own trend: off for most clients
        trends = own_trends(link.id)
        if trends:
            return render_template("client/done.html", receipt=receipt, first_time=first_time, trends=trends)
    # otherwise the page is the same for everyone but the receipt
    render = partial(render_template, "client/done.html", receipt=mark("receipt"), first_time=first_time, trends=[])
    return kept_page(("client/done.html", first_time), render, {"receipt": receipt})


def _held_page(status: int = 200):
    """An end-of-session questionnaire before the clinician released it: say plainly when it comes."""
    return render_template("client/held.html"), status


@bp.get("/<token>")
def answer(token: str):
    link = _load(token)
    if link.receipt is not None:
        return _done_page(link.receipt, first_time=False, link=link)
    if is_expired(link):
        abort(410)
    if link.held:
        return _held_page()
    instrument = _instrument(link)
    return fresh_questionnaire(
        "client/form.html",
        instrument,
        link.language,
        action=_own_address(),
        csrf_context=link.token_hash,
        keep_seconds=current_app.config["CSRF_TIME_LIMIT"],
    )


@bp.post("/<token>")
def submit(token: str):
    link = _load(token)
    if link.receipt is not None:  # a repeated or double-clicked submit
        return _done_page(link.receipt, first_time=False, link=link)
    if is_expired(link):
        abort(410)
    if link.held:
        return _held_page(409)
    instrument = _instrument(link)
    posted = PostedAnswers(instrument, request.form, link.token_hash)
    if posted.answers is None:
        return _form_page(link, instrument, token, posted.form, 422, unknown=posted.unknown)
    try:
        submission = submit_link(
            portal().db,
            portal().sessions,
            portal().engine,
            link,
            token,
            posted.answers,
            address=address(),
            retry_seconds=float(current_app.config["DB_RETRY_SECONDS"]),
        )
    except ResponseValidationError as exc:
        mark_refused_answers(posted.form, exc)
        return _form_page(link, instrument, token, posted.form, 422)
    except LinkError as exc:
        if exc.reason == "held":
            return _held_page(409)
        abort(410 if exc.reason == "expired" else 404)
    return _done_page(submission.receipt, first_time=submission.created, link=link)


def _instrument(link: LinkView):
    instrument = portal().engine.instruments.get(link.instrument_id, link.instrument_version)
    if not instrument.wording_installed:  # licensed wording removed after the link was made
        abort(503)
    return instrument
