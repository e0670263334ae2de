"""Application-wide page behaviour: security headers, error pages, template helpers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import werkzeug.exceptions
from flask import Flask, abort, current_app, render_template, request
from flask_babel import get_locale
from flask_babel import gettext as _

from core.errors import Conflict, DatabaseUnavailable, DomainError, InvalidInput, NotAllowed, NotFound
from core.responses import is_retryable
from web.access import core_message
from web.api_errors import api_error
from web.texts import lazy_gettext as _l

# No inline script or style anywhere, so the policy can stay this strict.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = (  # on every response that does not set its own
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)

ERROR_PAGES = {
    400: (_l("Something was wrong with that request"), _l("Please go back and try again.")),
    403: (_l("You cannot open this page"), _l("Your account does not have access to it.")),
    404: (_l("This page or link is not valid"), _l("Please check the link, or ask your clinician for a new one.")),
    405: (_l("This page cannot be used that way"), _l("Please go back and try again.")),
    413: (_l("That was too much to send at once"), _l("Please shorten your answers and send again.")),
    410: (_l("This link has expired"), _l("Please ask your clinician for a new link.")),
    422: (_l("Some answers need your attention"), _l("Please go back and check them.")),
    429: (_l("Too many attempts"), _l("Please wait a few minutes and try again.")),
    500: (_l("Something went wrong on our side"), _l("Your answers were not saved. Please try again in a moment.")),
    503: (_l("The service is not available just now"), _l("Please try again in a moment.")),
}


def init_app(app: Flask) -> None:
    app.before_request(_refuse_nul_characters)
    app.after_request(_security_headers)
    app.context_processor(lambda: {"page_language": _page_language})
    for status in ERROR_PAGES:
        if status not in app.error_handler_spec.get(None, {}):
            app.register_error_handler(status, _error_page)
    app.register_error_handler(DomainError, domain_problem)
    app.register_error_handler(sa.exc.DBAPIError, _database_error)


def _page_language() -> str:
    """The page's language as a BCP 47 tag for ``<html lang>`` (Babel spells pt-BR as pt_BR)."""
    return str(get_locale() or "en").replace("_", "-")


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _refuse_nul_characters() -> None:
    """No field anywhere may hold a NUL character: PostgreSQL cannot store it in text and SQLite
    would store it silently, so refuse it up front, naming the field, and both behave the same."""
    if not request.query_string and not request.environ.get("CONTENT_TYPE"):
        return  # no query and no form (a link page): nothing to parse
    # only a form body has form fields: a GET's empty form is not worth parsing
    sources = (request.args, request.form) if request.mimetype in _FORM_TYPES else (request.args,)
    for source in sources:
        for name, values in source.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                abort(
                    400, description=_l("%(field)s: contains a NUL character, which is not allowed.", field=name[:64])
                )


def _security_headers(response: Any) -> Any:
    headers = response.headers
    present = {name.lower() for name, _value in headers}  # one pass: setdefault would scan the list per header
    for name, value in SECURITY_HEADERS:
        if name.lower() not in present:  # a view's own value stands
            headers.add(name, value)
    if request.endpoint != "static":
        # Pages may show answers or client details: never keep them in any cache.
        headers["Cache-Control"] = "no-store"
    return response


def _error_page(error: Any) -> Any:
    status = getattr(error, "code", 500) or 500
    title, message = ERROR_PAGES.get(status, ERROR_PAGES[500])
    # abort(422, description="...") names the field and the reason: show it instead of the generic text
    custom = getattr(error, "description", None)
    if custom and custom != getattr(type(error), "description", None):
        message = custom
    if request.path.startswith(("/api/", "/fhir/")):
        return api_error(status, error)
    return render_template("plain.html", title=str(title), message=str(message)), status


# -- refusals from core and database outages ------------------------------------------

# Field names that core operations report, as people read them on a page.
FIELD_LABELS = {
    "note": _l("Note"),
    "number": _l("Session"),
    "session": _l("Session"),
    "episode": _l("Episode"),
    "assignment": _l("Link"),
    "plan": _l("Measurement plan"),
    "custom": _l("Custom plan"),
    "title": _l("Title"),
    "channel": _l("Channel"),
}
DOMAIN_STATUS = {InvalidInput: 422, NotAllowed: 403, Conflict: 409, DatabaseUnavailable: 503}


def domain_problem(error: DomainError) -> Any:
    """A core operation refused: 404 page for what the person may not see, else the field and the reason."""
    if isinstance(error, NotFound):
        return _error_page(werkzeug.exceptions.NotFound())
    if isinstance(error, DatabaseUnavailable):
        return _unavailable()
    status = next((code for kind, code in DOMAIN_STATUS.items() if isinstance(error, kind)), 422)
    field = error.field or "request"
    label = FIELD_LABELS.get(field, field)
    return render_template("auth/problem.html", problems=[(label, field, core_message(error.message))]), status


def _database_error(error: sa.exc.DBAPIError) -> Any:
    if not is_retryable(error):
        raise error  # a defect, not an outage: the 500 page and the log
    current_app.logger.warning("database unavailable: %s", type(error.orig).__name__)
    return _unavailable()


def _unavailable() -> Any:
    """503 while the database cannot be reached. A client's questionnaire answers come back in a form to send again;
    the API and the FHIR face answer in their own format."""
    if request.path.startswith(("/api/", "/fhir/")):
        refusal = werkzeug.exceptions.ServiceUnavailable("The database cannot be reached just now; try again shortly.")
        response = api_error(503, refusal)
        response.headers["Retry-After"] = "5"
        return response
    if request.method == "POST" and request.blueprint in ("client", "kiosk"):
        fields = [(name, value) for name, values in request.form.lists() for value in values]
        return render_template("client/resend.html", fields=fields, action=request.path), 503
    title = ERROR_PAGES[503][0]
    return render_template(
        "plain.html",
        title=str(title),
        message=_("The database cannot be reached just now. Nothing was changed; please try again in a moment."),
    ), 503
