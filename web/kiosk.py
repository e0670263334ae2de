"""Kiosk mode: a waiting-room device unlocked for one client's unanswered questionnaires.

A clinician unlocks the device from a session page; that signs the clinician out on the
device and sets a kiosk cookie whose token (stored only as a hash) opens exactly the listed
assignments, one after another, and nothing else. The plan's end-of-session questionnaires wait:
after the start-of-session ones the device asks the client to hand it back, and the clinician
releases the rest there with their password (throttled as sign-in; no sign-in session starts).
After the last one, when the kiosk expires, or when someone presses "Lock", the device shows a
neutral locked page.
"""

from __future__ import annotations

from typing import Any

import wtforms
from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from wtforms import validators as v

from core import ResponseValidationError
from core.accounts import SignInLimits, SignInRefused
from core.care import (
    find_kiosk,
    kiosk_next,
    kiosk_position,
    kiosk_waiting,
    lock_kiosk,
    release_on_kiosk,
    submit_for_kiosk,
)
from core.models import Assignment, KioskSession
from core.responses import LinkError
from core.sites import client_site_name
from web.access import KIOSK_COOKIE, StaffForm, address, allow, form_status, make_form
from web.auth import wait_message
from web.forms import PostedAnswers, mark_refused_answers, questionnaire_form, render_questionnaire
from web.state import db_session, portal
from web.texts import lazy_gettext as _l

bp = Blueprint("kiosk", __name__, url_prefix="/kiosk")


class LockForm(StaffForm):
    pass


WRONG_PASSWORD = _l("This password is not right.")


class ReleaseForm(StaffForm):
    """The clinician's short re-authentication on the hand-back screen."""

    password = wtforms.PasswordField(
        _l("Your password"), [v.InputRequired(_l("Enter your password.")), v.Length(max=1024)]
    )


def _kiosk() -> KioskSession | None:
    token = request.cookies.get(KIOSK_COOKIE)
    if not token:
        return None
    found = find_kiosk(db_session(), token)
    if found is None:
        g.clear_kiosk_cookie = True
        return None
    g.kiosk_context = f"kiosk:{found.token_hash}"
    g.site_name = client_site_name(db_session(), found.client_id)  # the page header's clinic
    return found


def _lock(kiosk: KioskSession, reason: str) -> None:
    session = db_session()
    lock_kiosk(session, kiosk, reason=reason, address=address())
    session.commit()
    g.clear_kiosk_cookie = True


def _locked() -> Any:
    return render_template("kiosk/locked.html")


def _handback(form: Any = None, problem: Any = None) -> Any:
    """Start-of-session questionnaires done, end-of-session ones waiting: hand the tablet back."""
    return render_template(
        "kiosk/handback.html",
        form=form if form is not None else make_form(ReleaseForm),
        problem=problem,
        lock_form=make_form(LockForm),
    )


def _form_page(kiosk: KioskSession, assignment: Assignment, form: Any, status: int = 200, unknown: bool = False) -> Any:
    instrument = portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    g.language = assignment.language
    position, total = kiosk_position(kiosk, assignment)
    page = render_questionnaire(
        "kiosk/form.html",
        instrument,
        assignment.language,
        form,
        action=url_for("kiosk.submit"),
        unknown=unknown,
        assignment=assignment,
        position=position,
        total=total,
        lock_form=make_form(LockForm),
    )
    return page, status


def _context(kiosk: KioskSession, assignment: Assignment) -> str:
    return f"kiosk:{kiosk.token_hash}:{assignment.id}"


@bp.get("")
@allow("kiosk")
def kiosk() -> Any:
    found = _kiosk()
    if found is None:
        return _locked()
    assignment = kiosk_next(db_session(), found)
    if assignment is None:
        if kiosk_waiting(db_session(), found):
            return _handback()
        _lock(found, "finished")
        return _locked()
    instrument = portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    return _form_page(found, assignment, questionnaire_form(instrument, None, _context(found, assignment)))


@bp.post("")
@allow("kiosk")
def submit() -> Any:
    found = _kiosk()
    if found is None:
        return _locked(), 403
    assignment = kiosk_next(db_session(), found)
    if assignment is None or request.form.get("assignment") != str(assignment.id):
        return redirect(url_for("kiosk.kiosk"), 303)  # a stale or repeated submit: show what is next
    instrument = portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    posted = PostedAnswers(instrument, request.form, _context(found, assignment), allowed=("assignment",))
    if posted.answers is None:
        form = posted.form
        return _form_page(found, assignment, form, 400 if form.csrf_token.errors else 422, unknown=posted.unknown)
    kiosk_id, assignment_id = found.id, assignment.id
    db_session().close()  # the submission runs in its own transaction, with the links' retries
    try:
        submit_for_kiosk(
            portal().sessions,
            portal().engine,
            kiosk_id,
            assignment_id,
            posted.answers,
            address=address(),
            retry_seconds=float(current_app.config["DB_RETRY_SECONDS"]),
        )
    except ResponseValidationError as exc:
        mark_refused_answers(posted.form, exc)
        return _form_page(found, assignment, posted.form, 422)
    except LinkError:
        pass  # locked or expired meanwhile: the next page says so
    return redirect(url_for("kiosk.kiosk"), 303)


@bp.post("/lock")
@allow("kiosk")
def lock() -> Any:
    found = _kiosk()
    if found is None:
        return _locked(), 403
    form = make_form(LockForm)
    if not form.validate():
        return _locked(), 400
    _lock(found, "locked")
    return redirect(url_for("kiosk.kiosk"), 303)


@bp.post("/release")
@allow("kiosk")
def release() -> Any:
    """The clinician's password on the hand-back screen releases the end-of-session questionnaires here."""
    found = _kiosk()
    if found is None:
        return _locked(), 403
    form = make_form(ReleaseForm)
    if not form.validate():
        return _handback(form), form_status(form)
    session = db_session()
    if not kiosk_waiting(session, found):
        return redirect(url_for("kiosk.kiosk"), 303)  # released meanwhile (say, from the session page)
    try:
        release_on_kiosk(
            session,
            found,
            form.password.data,
            limits=SignInLimits.from_settings(current_app.config),
            address=address(),
        )
    except SignInRefused as refused:
        session.commit()  # the failure counts and its audit entry are kept
        if refused.reason == "throttled":
            return _handback(form, wait_message(refused.retry_after)), 429, {"Retry-After": str(refused.retry_after)}
        return _handback(form, WRONG_PASSWORD), 401
    session.commit()
    return redirect(url_for("kiosk.kiosk"), 303)
