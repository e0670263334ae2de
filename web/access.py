"""Who may open which page: the access table, the signed-in user, cookies and staff forms.

Every view of the staff blueprints is decorated with :func:`allow`; a staff view without a
rule is refused (403). Endpoints of other blueprints are listed in :data:`OTHER_ENDPOINTS`.
``tests/test_access.py`` walks the whole URL map and fails for an endpoint that has no rule.

Roles: ``admin``, ``clinician``, ``supervisor``, ``auditor`` (signed-in accounts); ``public`` (anyone);
``link`` (whoever holds a questionnaire link); ``kiosk`` (a device unlocked for one client); ``key`` (whoever
sends an API key: the JSON API and the FHIR face check it and its scopes themselves, web/api.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import sqlalchemy.orm as so
from flask import Flask, abort, current_app, g, redirect, render_template, request, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_babel import get_locale
from flask_babel import gettext as _
from werkzeug.datastructures import CombinedMultiDict

from core.accounts import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    SessionCheck,
    SessionPolicy,
    check_session,
    load_session,
    store_session_check,
)
from core.audit import PendingEntries, store_alone
from core.models import DEFAULT_SITE_NAME, User, UserSession
from core.sites import site_name
from core.tokens import hash_token, new_token
from web.forms import CSRF_FIELD, CSRFForm, csrf_meta, csrf_token_for
from web.state import db_session, portal
from web.texts import lazy_gettext as _l

SESSION_COOKIE = "rapportal_session"
PRE_COOKIE = "rapportal_pre"  # anonymous forms (sign-in, setup): binds their CSRF token to this browser
KIOSK_COOKIE = "rapportal_kiosk"
STAFF_ROLES = ("admin", "clinician", "supervisor", "auditor")
STAFF_BLUEPRINTS = ("auth", "clinician", "admin", "kiosk", "reports", "api_keys")

# Endpoints that other modules own, with the rule that applies to them.
OTHER_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "static": ("public",),
    "health.healthz": ("public",),
    "client.answer": ("link",),
    "client.submit": ("link",),
}

DEFAULTS = {
    "SESSION_IDLE_MINUTES": 30,
    "SESSION_ABSOLUTE_HOURS": 12,
    "COOKIE_SECURE": "auto",  # auto: Secure when the request came over HTTPS; or true / false
    # Sign-in backoff (docs/accounts.md): free failures, then waits of 2, 4, 8 ... seconds up to the cap
    "LOGIN_FREE_FAILURES": 5,  # per account and address
    "LOGIN_MAX_WAIT_SECONDS": 900,
    "LOGIN_ACCOUNT_FREE_FAILURES": 20,  # per account, from every address: gentle, never long
    "LOGIN_ACCOUNT_MAX_WAIT_SECONDS": 5,
    "LOGIN_ADDRESS_FREE_FAILURES": 100,  # per address, on every account: slows spraying, never locks long
    "LOGIN_ADDRESS_MAX_WAIT_SECONDS": 60,
    "LOGIN_FORGET_SECONDS": 3600,  # a counter without a failure for this long starts again
    "KIOSK_HOURS": 4,
}


def allow(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Record which roles may open a view (checked before every request)."""
    for role in roles:
        if role not in (*STAFF_ROLES, "public", "link", "kiosk", "key"):
            raise ValueError(f"unknown role {role!r}")

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        view.access_roles = tuple(roles)  # type: ignore[attr-defined]
        return view

    return mark


def access_rule(app: Flask, endpoint: str) -> tuple[str, ...] | None:
    """The roles allowed on ``endpoint``, or None when it has no rule."""
    view = app.view_functions.get(endpoint)
    roles = getattr(view, "access_roles", None)
    return roles if roles is not None else OTHER_ENDPOINTS.get(endpoint)


class HandoverCookie(SecureCookieSessionInterface):
    """Flask's signed session cookie, used only to carry new links to the page after a redirect.

    Secure follows ``COOKIE_SECURE`` like the portal's own cookies.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return cookie_secure()

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        # Most requests (every link page) carry no such cookie: skip building the signing serializer,
        # which Flask makes anew for each request and which cost a link page about a tenth of its time.
        # The raw header is enough to tell: parsing every cookie just to find none cost a link page 1%.
        if app.secret_key and self.get_cookie_name(app) not in request.environ.get("HTTP_COOKIE", ""):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        if not session and not session.modified and not session.accessed:
            return  # untouched and empty (every link page): no cookie to set or delete, nothing to vary on
        super().save_session(app, session, response)


def init_app(app: Flask) -> None:
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.config.update(SESSION_COOKIE_NAME="rapportal_handover", SESSION_COOKIE_SAMESITE="Lax")
    app.session_interface = HandoverCookie()
    app.before_request(_enforce_access)
    app.after_request(_set_cookies)
    app.after_request(_store_due_last_seen)
    app.context_processor(_template_context)
    app.register_error_handler(401, _unauthorised)


def address() -> str:
    return (request.remote_addr or "unknown")[:64]


def policy() -> SessionPolicy:
    config = current_app.config
    return SessionPolicy(
        idle=timedelta(minutes=int(config["SESSION_IDLE_MINUTES"])),
        absolute=timedelta(hours=int(config["SESSION_ABSOLUTE_HOURS"])),
    )


def reading_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a staff view whose GET only reads (the caseload, a client's page).

    Its request reads in a read-only session (on SQLite a deferred transaction: no write lock while it loads and
    draws) and writes only in short transactions of its own: the audit entry of the read (:func:`read_audit`),
    committed before the page is rendered, and a sign-in session's due last-seen time or end.
    """
    view.reads_only = True  # type: ignore[attr-defined]
    return view


def _reading_request() -> bool:
    if request.method not in ("GET", "HEAD") or request.endpoint is None:
        return False
    return bool(getattr(current_app.view_functions.get(request.endpoint), "reads_only", False))


def current_session() -> UserSession | None:
    """The request's live sign-in session (loaded once per request)."""
    if "user_session" not in g:
        g.user_session = None
        token = request.cookies.get(SESSION_COOKIE)
        if token and _reading_request():
            g.user_session = _reading_session(token)
        elif token:
            session = db_session()
            g.user_session = load_session(session, token, policy())
            if session.dirty:
                session.commit()
        if token and g.user_session is None:
            g.clear_session_cookie = True
    return g.user_session


def _reading_session(token: str) -> UserSession | None:
    """:func:`current_session` of a reading view: checked in the read-only session; an end is stored at once, a
    due last-seen time with the view's audit entry (:func:`read_audit`) or, failing that, after the view."""
    check = check_session(db_session(read_only=True), token, policy())
    if check.end_reason and check.ended is not None:
        with portal().sessions.begin() as writer:
            store_session_check(writer, check.ended.id, check)
        return None
    if check.touch:
        g.due_last_seen = check
    return check.found


def _store_last_seen(writer: so.Session) -> None:
    check: SessionCheck | None = g.pop("due_last_seen", None)
    if check is not None and check.found is not None:
        store_session_check(writer, check.found.id, check)


def _store_due_last_seen(response: Any) -> Any:
    if g.get("due_last_seen") is not None:  # a reading view that wrote no audit entry (a 404, say)
        with portal().sessions.begin() as writer:
            _store_last_seen(writer)
    return response


@contextmanager
def read_audit() -> Iterator[PendingEntries]:
    """Entries pending for the audit entry of a reading view's read, stored when the block ends.

    Core adds the entry while it reads in the request's read-only session; it is stored before the page is rendered
    and sent, and no write lock is held while reading. An entry alone (nearly every view) is one INSERT that commits
    by itself (``core.audit.store_alone``). With a due last-seen time it is one short transaction: on SQLite BEGIN
    IMMEDIATE, the INSERT, the UPDATE, COMMIT; on PostgreSQL two statements that commit by themselves.
    """
    pending = PendingEntries()
    yield pending
    if len(pending.entries) == 1 and g.get("due_last_seen") is None:
        store_alone(portal().db, pending.entries[0])
        return
    with portal().sessions() as writer:
        if writer.get_bind().dialect.name == "postgresql":
            # The entry and a due last-seen time are all it writes, each complete in itself: on PostgreSQL each
            # statement commits by itself, a round trip each, without BEGIN and COMMIT round trips around them.
            writer.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        writer.add_all(pending.entries)
        _store_last_seen(writer)
        writer.commit()


def current_user() -> User | None:
    found = current_session()
    return found.user if found is not None else None


def _enforce_access() -> Any:
    endpoint = request.endpoint
    if endpoint is None:
        return None  # 404/405: the error handler answers
    blueprint = endpoint.split(".", 1)[0] if "." in endpoint else None
    roles = access_rule(current_app, endpoint)
    if blueprint not in STAFF_BLUEPRINTS:
        return None
    if roles is None:
        abort(403)  # a staff view without an access rule is never served
    if "public" in roles or "kiosk" in roles:
        return None
    if _reading_request():
        db_session(read_only=True)  # the whole request reads without the write lock (see reading_view)
    user = current_user()
    if user is None:
        if request.method == "GET":
            return redirect(url_for("auth.login", next=request.path))
        abort(401)
    if user.role not in roles:
        abort(403)
    g.site_name = site_name(db_session(), user)  # the page header's clinic name (see clinic_name)
    return None


def cookie_secure() -> bool:
    setting = str(current_app.config["COOKIE_SECURE"]).lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    return request.is_secure


def set_cookie(response: Any, name: str, value: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="Lax", secure=cookie_secure(), path="/")


def clear_cookie(response: Any, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="Lax", secure=cookie_secure())


def _set_cookies(response: Any) -> Any:
    if g.get("new_session_token"):
        set_cookie(response, SESSION_COOKIE, g.new_session_token)
    elif g.get("clear_session_cookie"):
        clear_cookie(response, SESSION_COOKIE)
    if g.get("new_pre_token"):
        set_cookie(response, PRE_COOKIE, g.new_pre_token)
    if g.get("new_kiosk_token"):
        set_cookie(response, KIOSK_COOKIE, g.new_kiosk_token)
    elif g.get("clear_kiosk_cookie"):
        clear_cookie(response, KIOSK_COOKIE)
    return response


# -- forms ---------------------------------------------------------------------

try:  # WTForms 3.3 deprecates (value, label) tuples in favour of SelectChoice
    from wtforms.fields.choices import SelectChoice
except ImportError:  # pragma: no cover - older WTForms
    SelectChoice = None


def choices(pairs: Any) -> list[Any]:
    """Select options from (value, label) pairs, in the form this WTForms version prefers."""
    return [SelectChoice(value, label) if SelectChoice else (value, label) for value, label in pairs]


class StaffForm(CSRFForm):
    """A form with a CSRF token bound to the sign-in session (or, before sign-in, to this browser)."""


def csrf_context() -> str:
    found = current_session()
    if found is not None:
        return f"user:{found.token_hash}"
    if g.get("kiosk_context"):
        return g.kiosk_context
    pre = request.cookies.get(PRE_COOKIE) or g.get("new_pre_token")
    if not pre:
        pre = g.new_pre_token = new_token()
    return f"pre:{hash_token(pre)}"


def form_token() -> str:
    """The request's staff form token, as every staff form of the request carries it (:class:`ContextCSRF` binds it
    to the sign-in session, the kiosk or the browser, not to the form): a page puts it in its forms without building
    a form for each (a button or a tick list needs none)."""
    token = g.get("form_token")
    if token is None:
        token = g.form_token = csrf_token_for(current_app.config["SECRET_KEY"].encode(), csrf_context())
    return token


def make_form(form_class: type[StaffForm], **kwargs: Any) -> Any:
    """Bind a staff form to the request's data (POST) or leave it empty (GET)."""
    formdata = None
    if request.method == "POST":
        formdata = CombinedMultiDict([request.files, request.form]) if request.files else request.form
    return form_class(
        formdata=formdata,
        # WTForms' own messages (a wrong choice or date, a too-long entry) in the page's language
        meta={**csrf_meta(csrf_context()), "locales": [str(get_locale() or "en")]},
        **kwargs,
    )


def form_status(form: Any) -> int:
    """The status for a refused form: 400 for a failed CSRF check, 422 for wrong input."""
    return 400 if form.csrf_token.errors else 422


def form_problem(form: Any) -> Any:
    """A page listing a refused form's errors by field, for forms posted from another page."""
    problems = [
        (field.label.text if field.name != CSRF_FIELD else _("Form check"), field.name, error)
        for field in form
        for error in field.errors
    ]
    return render_template("auth/problem.html", problems=problems), form_status(form)


# -- core text shown on staff pages -------------------------------------------------
# core/ keeps its messages in English (logs, the CLI, the API); the staff pages translate the
# ones they show here, when they show them. A message not listed is shown as it is.

ROLE_TITLES = {
    "admin": _l("Administrator"),
    "clinician": _l("Clinician"),
    "supervisor": _l("Supervisor (read-only)"),
    "auditor": _l("Auditor (read-only)"),
}


def _core_messages() -> dict[str, Any]:
    return {
        "Use 2 to 64 characters.": _l("Use 2 to 64 characters."),
        "Use letters, digits and . _ - @ only.": _l("Use letters, digits and . _ - @ only."),
        "This username is taken.": _l("This username is taken."),
        f"Use at least {MIN_PASSWORD_LENGTH} characters.": _l(
            "Use at least %(number)s characters.", number=MIN_PASSWORD_LENGTH
        ),
        f"Use at most {MAX_PASSWORD_LENGTH} characters.": _l(
            "Use at most %(number)s characters.", number=MAX_PASSWORD_LENGTH
        ),
        "The password cannot be only spaces.": _l("The password cannot be only spaces."),
        "A client with this code exists already.": _l("A client with this code exists already."),
        "This is not your current password.": _l("This is not your current password."),
        "Write a note: what you did or decided.": _l("Write a note: what you did or decided."),
        "This questionnaire is already answered; its link cannot be re-issued.": _l(
            "This questionnaire is already answered; its link cannot be re-issued."
        ),
        "This session has no questionnaires left to answer.": _l("This session has no questionnaires left to answer."),
        "The questionnaires left wait for the end of the session: release them first.": _l(
            "The questionnaires left wait for the end of the session: release them first."
        ),
        # core/notify.py: contact details and sending links
        "Enter an e-mail address such as name@example.org.": _l("Enter an e-mail address such as name@example.org."),
        "Enter the number in international form, such as +49 30 1234567.": _l(
            "Enter the number in international form, such as +49 30 1234567."
        ),
        "Choose a time zone such as Europe/Berlin.": _l("Choose a time zone such as Europe/Berlin."),
        "Consent to contact needs an e-mail address or a phone number.": _l(
            "Consent to contact needs an e-mail address or a phone number."
        ),
        "Choose an installed and configured channel.": _l("Choose an installed and configured channel."),
        "The client has not agreed to be contacted: record their consent first.": _l(
            "The client has not agreed to be contacted: record their consent first."
        ),
    }


def core_message(message: str) -> str:
    """A message from core/ in the page's language, when the catalogs know it."""
    return str(_core_messages().get(message, message))


def role_title(role: str) -> str:
    """A role's name for people, in the page's language (the code itself for an unknown role)."""
    title = ROLE_TITLES.get(role)
    return str(title) if title is not None else role


def actor() -> str:
    user = current_user()
    return f"user:{user.username}" if user else "anonymous"


def read_only() -> bool:
    """Whether the signed-in person may only read what the page shows (a supervisor): no button that changes it."""
    user = current_user()
    return user is not None and user.role == "supervisor"


def _template_context() -> dict[str, Any]:
    def clinic_name() -> str:
        # looked up once the access check let a signed-in person in, or with a client's link or kiosk; never from
        # a template (the 503 page has no database). The unnamed default site of a one-clinic portal is CLINIC_NAME.
        name = g.get("site_name")
        return name if name and name != DEFAULT_SITE_NAME else str(current_app.config["CLINIC_NAME"])

    return {
        "current_user": current_user,
        "form_token": form_token,
        "role_title": role_title,
        "read_only": read_only,
        "clinic_name": clinic_name,
    }


def _unauthorised(_error: Any) -> Any:
    return (
        render_template(
            "plain.html",
            title=_("Please sign in"),
            message=_("Sign in again, then repeat what you were doing."),
        ),
        401,
    )
