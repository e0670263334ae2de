"""Signing in and out, the one-time setup of the first administrator, and password changes."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import wtforms
from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from flask_babel import ngettext
from wtforms import validators as v

from core.accounts import (
    AccountError,
    SignInLimits,
    SignInRefused,
    any_user_exists,
    change_password,
    check_setup_token,
    set_up_first_admin,
    sign_in,
    sign_out,
)
from core.models import User
from web.access import (
    StaffForm,
    actor,
    address,
    allow,
    core_message,
    current_session,
    current_user,
    form_problem,
    form_status,
    make_form,
)
from web.state import db_session
from web.texts import lazy_gettext as _l

bp = Blueprint("auth", __name__)

SAME_ANSWER = _l("The username or password is not right.")


class LoginForm(StaffForm):
    username = wtforms.StringField(_l("Username"), [v.InputRequired(_l("Enter your username.")), v.Length(max=64)])
    password = wtforms.PasswordField(_l("Password"), [v.InputRequired(_l("Enter your password.")), v.Length(max=1024)])


class LogoutForm(StaffForm):
    pass


def new_password_field() -> Any:
    return wtforms.PasswordField(_l("New password"), [v.InputRequired(_l("Choose a password."))])


def confirm_field() -> Any:
    return wtforms.PasswordField(
        _l("New password again"),
        [v.InputRequired(_l("Type the password again.")), v.EqualTo("password", _l("The two passwords differ."))],
    )


class SetupForm(StaffForm):
    username = wtforms.StringField(_l("Username"), [v.InputRequired(_l("Choose a username."))])
    display_name = wtforms.StringField(_l("Your name"), [v.Optional(), v.Length(max=128)])
    password = new_password_field()
    confirm = confirm_field()


class PasswordForm(StaffForm):
    current = wtforms.PasswordField(_l("Current password"), [v.InputRequired(_l("Enter your current password."))])
    password = new_password_field()
    confirm = confirm_field()


def home_for(user: User) -> str:
    if user.role == "clinician":
        return url_for("clinician.caseload")
    if user.role == "admin":
        return url_for("admin.users")
    if user.role == "supervisor":
        return url_for("reports.reports")
    return url_for("admin.audit")


def _safe_next(target: str | None) -> str | None:
    """A local path to return to after sign-in, or None: never another site.

    Browsers and Werkzeug drop control characters and whitespace from a Location, so
    ``/\t/evil.example`` would become ``//evil.example``: refuse any of those outright.
    """
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(char) < 33 or ord(char) == 127 for char in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


@bp.get("/")
@allow("public")
def home() -> Any:
    user = current_user()
    if user is not None:
        return redirect(home_for(user))
    if not any_user_exists(db_session()):
        return redirect(url_for("auth.setup_info"))
    return redirect(url_for("auth.login"))


@bp.get("/setup")
@allow("public")
def setup_info() -> Any:
    if any_user_exists(db_session()):
        abort(404)
    return render_template("auth/setup_info.html")


@bp.route("/setup/<token>", methods=["GET", "POST"])
@allow("public")
def setup(token: str) -> Any:
    session = db_session()
    if any_user_exists(session) or not check_setup_token(current_app.config["SECRET_KEY"], token):
        abort(404)
    form = make_form(SetupForm)
    if request.method == "POST":
        if form.validate():
            try:
                signed_in = set_up_first_admin(
                    session, form.username.data, form.display_name.data or "", form.password.data, address=address()
                )
            except AccountError as exc:
                form[exc.field].errors = [core_message(exc.message)]
            else:
                if signed_in is None:  # another setup won the race
                    abort(404)
                g.new_session_token = signed_in.token
                session.commit()
                return redirect(url_for("admin.users"), 303)
        return render_template("auth/setup.html", form=form, token=token), form_status(form)
    return render_template("auth/setup.html", form=form, token=token)


@bp.route("/login", methods=["GET", "POST"])
@allow("public")
def login() -> Any:
    form = make_form(LoginForm)
    if request.method == "GET":
        if current_user() is not None:
            return redirect(home_for(current_user()))
        return render_template("auth/login.html", form=form, problem=None)
    if not form.validate():
        return render_template("auth/login.html", form=form, problem=None), form_status(form)
    session = db_session()
    try:
        signed_in = sign_in(
            session,
            form.username.data,
            form.password.data,
            address(),
            limits=SignInLimits.from_settings(current_app.config),
            replaces=current_session(),
        )
    except SignInRefused as refused:
        session.commit()  # the failure counts and its audit entry are kept
        if refused.reason == "throttled":
            page = render_template("auth/login.html", form=form, problem=wait_message(refused.retry_after))
            return page, 429, {"Retry-After": str(refused.retry_after)}
        return render_template("auth/login.html", form=form, problem=SAME_ANSWER), 401
    g.new_session_token = signed_in.token
    session.commit()
    return redirect(_safe_next(request.args.get("next")) or home_for(signed_in.user))


def wait_message(seconds: int) -> str:
    """How long a throttled sign-in must wait, in seconds or (from a minute on) whole minutes."""
    if seconds < 60:
        return ngettext(
            "Too many attempts. Please wait %(num)d second and try again.",
            "Too many attempts. Please wait %(num)d seconds and try again.",
            seconds,
        )
    return ngettext(
        "Too many attempts. Please wait %(num)d minute and try again.",
        "Too many attempts. Please wait %(num)d minutes and try again.",
        math.ceil(seconds / 60),
    )


@bp.post("/logout")
@allow("admin", "clinician", "supervisor", "auditor")
def logout() -> Any:
    form = make_form(LogoutForm)
    found = current_session()
    if not form.validate():
        return form_problem(form)
    session = db_session()
    assert found is not None
    sign_out(session, found, actor=actor(), address=address())
    session.commit()
    g.clear_session_cookie = True
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@allow("admin", "clinician", "supervisor", "auditor")
def password() -> Any:
    user = current_user()
    assert user is not None
    form = make_form(PasswordForm)
    if request.method == "POST":
        session = db_session()
        if form.validate():
            try:
                # every session ends with the change; this browser gets a new one
                g.new_session_token = change_password(
                    session, user, form.current.data, form.password.data, actor=actor(), address=address()
                )
            except AccountError as exc:
                session.rollback()
                form[exc.field].errors = [core_message(exc.message)]
            else:
                session.commit()
                return redirect(url_for("auth.password", changed=1), 303)
        return render_template("auth/password.html", form=form, changed=False), form_status(form)
    return render_template("auth/password.html", form=form, changed=request.args.get("changed") == "1")
