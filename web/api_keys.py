"""The administrator's API keys page: make a key (shown once), see every key, revoke one.

The operations are core/api_keys.py's, as the ``rapportal api-keys`` commands use them. A new key
reaches the page after the redirect in the signed handover cookie (as new questionnaire links do),
and is removed from it when the page shows it.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import sqlalchemy as sa
import wtforms
from flask import Blueprint, redirect, render_template, request, url_for
from flask import session as flask_session
from wtforms import validators as v

from core.api_keys import SCOPES, create_api_key, key_state, list_api_keys, revoke_api_key
from core.errors import InvalidInput
from core.models import User
from core.scope import site_user_ids
from web.access import (
    StaffForm,
    actor,
    address,
    allow,
    choices,
    core_message,
    current_user,
    form_problem,
    form_status,
    make_form,
)
from web.state import db_session
from web.texts import lazy_gettext as _l

bp = Blueprint("api_keys", __name__, url_prefix="/admin/api-keys")

SCOPE_TITLES = {
    "read": _l("read: clients, scores, alerts, instruments"),
    "write": _l("write: clients, episodes, sessions, links, acknowledging alerts"),
    "export": _l("export: start and download exports"),
}
STATE_TITLES = {"active": _l("Active"), "revoked": _l("Revoked"), "expired": _l("Expired")}


class ApiKeyForm(StaffForm):
    owner = wtforms.SelectField(_l("Acts as"), choices=[], validate_choice=True)
    name = wtforms.StringField(_l("What it is for"), [v.Optional(), v.Length(max=128)])
    scopes = wtforms.SelectMultipleField(
        _l("Scopes"),
        choices=choices((scope, SCOPE_TITLES[scope]) for scope in SCOPES),
        validate_choice=True,
        validators=[v.InputRequired(_l("Choose at least one scope."))],
    )
    expires = wtforms.DateField(_l("Stops working on (optional)"), [v.Optional()], format="%Y-%m-%d")


class RevokeForm(StaffForm):
    """The Revoke button: only its CSRF token is checked."""


def _form() -> ApiKeyForm:
    form = make_form(ApiKeyForm)
    people = db_session().scalars(
        sa.select(User)
        .where(User.active.is_(True), User.id.in_(site_user_ids(current_user())))
        .order_by(User.display_name)
    )
    form.owner.choices = choices(
        (user.username, f"{user.display_name} ({user.username}, {user.role})") for user in people
    )
    return form


@bp.route("", methods=["GET", "POST"])
@allow("admin")
def keys() -> Any:
    session = db_session()
    form = _form()
    status = 200
    if request.method == "POST":
        if form.validate():
            expires = form.expires.data
            try:
                issued = create_api_key(
                    session,
                    owner=form.owner.data,
                    name=form.name.data or "",
                    scopes=form.scopes.data,
                    expires_at=datetime.combine(expires, time(), tzinfo=UTC) if expires else None,
                    creator=current_user(),
                    actor=actor(),
                    address=address(),
                )
            except InvalidInput as exc:
                session.rollback()
                getattr(form, exc.field or "owner", form.owner).errors = [core_message(exc.message)]
            else:
                session.commit()
                flask_session["new_api_key"] = issued.secret
                return redirect(url_for("api_keys.keys"), 303)
        status = form_status(form)
    listed = list_api_keys(session, viewer=current_user(), actor=actor(), address=address())
    session.commit()
    return render_template(
        "admin/api_keys.html",
        form=form,
        revoke=make_form(RevokeForm),
        keys=listed,
        state=lambda key: STATE_TITLES[key_state(key)],
        active=lambda key: key_state(key) == "active",
        new_key=flask_session.pop("new_api_key", None),
    ), status


@bp.post("/<int:key_id>/revoke")
@allow("admin")
def revoke(key_id: int) -> Any:
    form = make_form(RevokeForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    revoke_api_key(session, key_id, viewer=current_user(), actor=actor(), address=address())
    session.commit()
    return redirect(url_for("api_keys.keys"), 303)
