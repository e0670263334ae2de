"""Kiosk mode: a waiting-room device unlocked for one client's unanswered questionnaires.

A clinician unlocks the device from a session page; that signs the clinician out on the
device and sets a kiosk cookie whose token (stored only as a hash) opens exactly the listed
assignments, one after another, and nothing else. After the last one, when the kiosk
expires, or when someone presses "Lock", the device shows a neutral locked page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, g, redirect, render_template, request, url_for

from core import ResponseValidationError
from core.audit import record
from core.models import Assignment, KioskSession
from core.responses import is_expired, submit_response
from core.tokens import hash_token
from web.access import KIOSK_COOKIE, StaffForm, address, allow, make_form
from web.forms import (
    answers_from,
    has_unknown_fields,
    mark_refused_answers,
    questionnaire_form,
    render_questionnaire,
)
from web.state import db_session, portal

bp = Blueprint("kiosk", __name__, url_prefix="/kiosk")


class LockForm(StaffForm):
    pass


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _kiosk() -> KioskSession | None:
    token = request.cookies.get(KIOSK_COOKIE)
    if not token:
        return None
    found = db_session().scalar(sa.select(KioskSession).where(KioskSession.token_hash == hash_token(token)))
    if found is None or found.ended_at is not None or datetime.now(UTC) >= _aware(found.expires_at):
        g.clear_kiosk_cookie = True
        return None
    g.kiosk_context = f"kiosk:{found.token_hash}"
    return found


def _next_assignment(kiosk: KioskSession) -> Assignment | None:
    session = db_session()
    for assignment_id in kiosk.assignment_ids:
        assignment = session.get(Assignment, assignment_id)
        if (
            assignment is not None
            and assignment.client_id == kiosk.client_id
            and assignment.completed_at is None
            and not is_expired(assignment)
        ):
            return assignment
    return None


def _lock(kiosk: KioskSession, reason: str) -> None:
    session = db_session()
    kiosk.ended_at = datetime.now(UTC)
    record(session, f"kiosk:{kiosk.id}", "kiosk.lock", f"kiosk:{kiosk.id}", address(), reason=reason)
    session.commit()
    g.clear_kiosk_cookie = True


def _locked() -> Any:
    return render_template("kiosk/locked.html")


def _form_page(kiosk: KioskSession, assignment: Assignment, form: Any, status: int = 200, unknown: bool = False) -> Any:
    instrument = portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    g.language = assignment.language
    page = render_questionnaire(
        "kiosk/form.html",
        instrument,
        assignment.language,
        form,
        action=url_for("kiosk.submit"),
        unknown=unknown,
        assignment=assignment,
        position=kiosk.assignment_ids.index(assignment.id) + 1,
        total=len(kiosk.assignment_ids),
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
    assignment = _next_assignment(found)
    if assignment is None:
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
    assignment = _next_assignment(found)
    if assignment is None or request.form.get("assignment") != str(assignment.id):
        return redirect(url_for("kiosk.kiosk"))  # a stale or repeated submit: show what is next
    instrument = portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    form = questionnaire_form(instrument, request.form, _context(found, assignment))
    valid = form.validate()
    if not valid or has_unknown_fields(instrument, request.form, allowed=("assignment",)):
        return _form_page(found, assignment, form, 400 if form.csrf_token.errors else 422, unknown=valid)
    session = db_session()
    try:
        submit_response(
            session,
            portal().engine,
            assignment,
            answers_from(form, instrument),
            actor=f"kiosk:{found.id}",
            address=address(),
        )
        session.commit()
    except ResponseValidationError as exc:
        session.rollback()
        mark_refused_answers(form, exc)
        return _form_page(found, assignment, form, 422)
    except sa.exc.IntegrityError:
        session.rollback()  # a double submit: the first one was stored
    return redirect(url_for("kiosk.kiosk"))


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
    return redirect(url_for("kiosk.kiosk"))
